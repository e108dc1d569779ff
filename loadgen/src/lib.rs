//! serverlab's load generator (open and closed loop, HdrHistogram latencies).
