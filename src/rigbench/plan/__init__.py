"""Planning: memory placement (memory.py); later speed, tune and advise."""
