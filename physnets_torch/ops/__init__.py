"""Pure functions (no parameters): attention kernels, scans, normalisers, residual updates."""
