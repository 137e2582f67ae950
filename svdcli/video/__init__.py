"""Video I/O on PyAV: probing, timestamp-based frame reading, writing, synthetic clips."""
