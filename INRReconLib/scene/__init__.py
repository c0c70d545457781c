"""MRML scene plumbing for the Slicer module, with the scene passed in explicitly.

Works in Slicer and with `slicer-core` (plain Python MRML) in tests. No Qt, no `import slicer`:
nodes are made by class name through the scene; only vtk, NumPy (and SimpleITK/h5py for files).
"""

from .compare import setup_comparison, tumour_statistics, difference_volume  # noqa: F401
from ..io.readers import read_measurement_header  # noqa: F401
from .measurement_display import load_measurement_nodes  # noqa: F401
from .series import SeriesSession, build_sequence  # noqa: F401
from .session import ReconstructionSession, SessionState  # noqa: F401
