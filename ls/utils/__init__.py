"""Small shared helpers (atomic I/O, hashing, logging)."""
