//! A zeroed anonymous `MAP_SHARED` mapping: memory that a process and every
//! child it forks afterwards see as the same bytes.
//!
//! This is how state survives `fork()`: `process-per-request` and `prefork`
//! children inherit the mapping, so an increment made by one child is seen by
//! the next. The session table, the `/stats` counters and the shutdown flag
//! all live in such mappings. Only lock-free atomics are placed in it, and
//! those work across processes on Linux (`std::sync::Mutex` would not: it is
//! not process-shared). The pages are allocated by the kernel on first touch,
//! so a large, mostly empty table costs address space, not memory.

use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// An anonymous shared mapping of a fixed size, unmapped on drop.
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory; what is stored in it (atomics only)
// decides what sharing is sound, and its users hand out only atomic access.
unsafe impl Send for SharedRegion {}
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Maps `len` zeroed bytes, rounded up to whole pages, readable and
    /// writable, shared with children forked after this call.
    pub fn new(len: usize) -> io::Result<SharedRegion> {
        let len = whole_pages(len)?;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedRegion { ptr, len })
    }

    /// Maps the file at `path`, `len` bytes rounded up to whole pages,
    /// shared with every process that maps it: another process (the
    /// benchmark runner) reads what this one writes without asking it.
    /// With `create`, the file is made (or emptied) and sized, so it reads
    /// as zeros; else it must already be that large.
    pub fn file(path: &std::path::Path, len: usize, create: bool) -> io::Result<SharedRegion> {
        use std::os::fd::AsRawFd;
        let len = whole_pages(len)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)?;
        if create {
            file.set_len(len as u64)?;
        } else if file.metadata()?.len() < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is smaller than {len} bytes", path.display()),
            ));
        }
        // SAFETY: a fresh shared mapping of a file at least `len` long; no
        // existing memory is touched. The mapping outlives the descriptor.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedRegion { ptr, len })
    }

    /// The start of the region; page-aligned, so aligned for any type.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The size in bytes, as mapped (whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never: at least one byte is mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `len` (at least one byte) rounded up to whole pages.
fn whole_pages(len: usize) -> io::Result<usize> {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    len.max(1)
        .checked_next_multiple_of(page)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mapping too large"))
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One value of type `T` alone in a shared mapping.
pub struct Shared<T> {
    region: SharedRegion,
    _value: PhantomData<T>,
}

impl<T> Shared<T> {
    /// Maps a zeroed `T`.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T`, and `T` must be safe to use from
    /// several processes at once: plain atomics (or structs of them) only.
    pub unsafe fn zeroed() -> io::Result<Shared<T>> {
        Ok(Shared {
            region: SharedRegion::new(std::mem::size_of::<T>())?,
            _value: PhantomData,
        })
    }

    /// A `T` in the file at `path`, shared with whoever else maps it (see
    /// [`SharedRegion::file`]); `create` makes it zeroed.
    ///
    /// # Safety
    /// As [`Shared::zeroed`]; and without `create`, the file must hold a
    /// valid `T` (one made by this call with `create`).
    pub unsafe fn file(path: &std::path::Path, create: bool) -> io::Result<Shared<T>> {
        Ok(Shared {
            region: SharedRegion::file(path, std::mem::size_of::<T>(), create)?,
            _value: PhantomData,
        })
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the region is page-aligned, at least size_of::<T>() long,
        // holds a valid T (see `zeroed`), and lives as long as `self`.
        unsafe { &*self.region.as_ptr().cast::<T>() }
    }
}
