"""INRRecon library: physics, fields, methods, I/O and the background worker.

Nothing here imports Qt or slicer; torch is imported lazily by the modules that need it, so
`import INRReconLib` stays cheap inside Slicer.
"""

__version__ = "0.1.0"
