"""StoreLens: retail analytics on the CCTV cameras a store already has.

The importable library holds all domain logic (geometry, counting rules,
tracking adapters, model wrappers, bus, storage); the folders under
``services/`` only wire it together. Importing this package does no work.
"""

__version__ = "0.1.0"
