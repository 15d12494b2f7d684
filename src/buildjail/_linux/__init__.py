"""The Linux machinery the backends and the doctor share (private)."""
