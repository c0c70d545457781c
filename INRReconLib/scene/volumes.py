"""Volume nodes <-> NumPy arrays and image grids, for an explicitly passed MRML scene.

Works with Slicer's own scene and with `slicer-core` (plain Python MRML). Imports only vtk and
NumPy: nodes are created by class name through the scene, so this module never imports `slicer`.

Conventions: arrays are NumPy order (k, j, i) = (z, y, x); `ImageGrid` is LPS (ITK, files);
MRML volume nodes are RAS. The LPS -> RAS matrix comes from `io.volume.ijk_to_ras_matrix`
(the one place it is defined); `grid_from_ijk_to_ras` is its inverse.
"""

from __future__ import annotations

import os

import numpy as np

from ..io.volume import LPS_TO_RAS
from ..io.volume import ijk_to_ras_matrix as ijk_to_ras_from_grid  # noqa: F401 (re-exported)
from ..physics.grid import ImageGrid


def grid_from_ijk_to_ras(ijk_to_ras: np.ndarray, shape_zyx) -> ImageGrid:
    """The LPS `ImageGrid` of a volume with this IJK->RAS matrix and array shape (nz, ny, nx)."""
    m = np.asarray(ijk_to_ras, dtype=float)
    lps = LPS_TO_RAS @ m[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = LPS_TO_RAS @ m[:3, 3]
    nz, ny, nx = (1, *shape_zyx) if len(shape_zyx) == 2 else tuple(shape_zyx)
    return ImageGrid((nx, ny, nz), tuple(spacing), tuple(origin), tuple(direction.ravel()))


def _vtk_matrix(m: np.ndarray):
    import vtk

    vm = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vm.SetElement(r, c, float(m[r, c]))
    return vm


def get_ijk_to_ras(node) -> np.ndarray:
    """4x4 IJK->RAS of a volume node as NumPy."""
    import vtk

    vm = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(vm)
    return np.array([[vm.GetElement(r, c) for c in range(4)] for r in range(4)])


def set_ijk_to_ras(node, ijk_to_ras: np.ndarray) -> None:
    node.SetIJKToRASMatrix(_vtk_matrix(np.asarray(ijk_to_ras, dtype=float)))


def array_from_volume(node) -> np.ndarray:
    """A view (no copy) of the node's voxels, shape (nz, ny, nx) (+ components if > 1)."""
    from vtk.util import numpy_support

    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume node {node.GetName()!r} has no voxels yet")
    nx, ny, nz = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    n_comp = image.GetNumberOfScalarComponents()
    return flat.reshape((nz, ny, nx) if n_comp == 1 else (nz, ny, nx, n_comp))


def update_volume_from_array(node, array: np.ndarray, ijk_to_ras: np.ndarray | None = None) -> None:
    """Deep-copy `array` (2D (ny, nx) or 3D (nz, ny, nx)) into the node's image data.

    Does what `slicer.util.updateVolumeFromArray` does, but needs no global scene: it replaces the
    vtkImageData scalars and fires ImageDataModifiedEvent so slice views refresh (live preview).
    """
    import vtk
    from vtk.util import numpy_support

    a = np.asarray(array)
    if a.ndim == 2:
        a = a[np.newaxis]
    if a.ndim != 3:
        raise ValueError(f"expected a 2D or 3D array, got shape {a.shape}")
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    a = np.ascontiguousarray(a)
    image = node.GetImageData()
    if image is None:
        image = vtk.vtkImageData()
        node.SetAndObserveImageData(image)
    image.SetDimensions(a.shape[2], a.shape[1], a.shape[0])
    scalars = numpy_support.numpy_to_vtk(a.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    image.Modified()
    if ijk_to_ras is not None:
        set_ijk_to_ras(node, ijk_to_ras)
    node.StorableModified()
    node.Modified()
    node.InvokeEvent(node.ImageDataModifiedEvent, node)


def ensure_display_node(node, scene, colour: str = "vtkMRMLColorTableNodeGrey"):
    """Give a scalar volume a grey display node (what Slicer's volumes logic would do)."""
    display = node.GetDisplayNode()
    if display is None:
        display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
        if scene.GetNodeByID(colour) is not None:
            display.SetAndObserveColorNodeID(colour)
        node.SetAndObserveDisplayNodeID(display.GetID())
    return display


def add_volume(scene, array: np.ndarray, ijk_to_ras: np.ndarray, name: str,
               class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node with voxels, geometry and a display node; name made unique in the scene."""
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    update_volume_from_array(node, array, ijk_to_ras)
    if class_name != "vtkMRMLLabelMapVolumeNode":
        display = ensure_display_node(node, scene)
        display.AutoWindowLevelOn()
    else:
        display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode")
        if scene.GetNodeByID("vtkMRMLColorTableNodeLabels") is not None:
            display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeLabels")
        node.SetAndObserveDisplayNodeID(display.GetID())
    return node


def load_volume_file(scene, path: str, name: str | None = None):
    """Read an image file (NRRD, NIfTI, MHA: anything SimpleITK reads) into a new volume node."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components")
    size = tuple(image.GetSize()) + (1,) * (3 - image.GetDimension())
    spacing = tuple(image.GetSpacing()) + (1.0,) * (3 - image.GetDimension())
    origin = tuple(image.GetOrigin()) + (0.0,) * (3 - image.GetDimension())
    d = np.eye(3)
    dim = image.GetDimension()
    d[:dim, :dim] = np.asarray(image.GetDirection()).reshape(dim, dim)
    grid = ImageGrid(size, spacing, origin, tuple(d.ravel()))
    array = array.reshape(grid.shape)
    if name is None:
        name = os.path.basename(str(path)).split(".")[0]
    return add_volume(scene, array, ijk_to_ras_from_grid(grid), name)


def write_volume_node(node, path: str) -> ImageGrid:
    """Write a volume node to an image file (LPS, as every file format expects); atomic."""
    import SimpleITK as sitk

    array = np.array(array_from_volume(node), copy=True)
    grid = grid_from_ijk_to_ras(get_ijk_to_ras(node), array.shape[:3])
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    folder, base = os.path.split(os.path.abspath(str(path)))
    tmp = os.path.join(folder, ".tmp-" + base)
    sitk.WriteImage(image, tmp)
    os.replace(tmp, os.path.join(folder, base))
    return grid


# Attributes that mark volumes INRRecon made for display, not images of the patient.
MEASUREMENT_ATTRIBUTE = "INRRecon.measurement"  # the file reader's sinogram / k-space sampling view
PREVIEW_ATTRIBUTE = "INRRecon.preview"  # a run's live preview
STANDARD_VIEWS = ("Red", "Yellow", "Green")


def is_patient_image(node) -> bool:
    """A scalar volume that can be a prior: not a label map, not a measurement shown as an
    image (a sinogram), not a live preview. Reconstructions are (a series chains them)."""
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        return False
    if node.GetAttribute(PREVIEW_ATTRIBUTE):
        return False
    # a reconstruction also records its measurement, but under INRRecon.method
    return not (node.GetAttribute(MEASUREMENT_ATTRIBUTE) and not node.GetAttribute("INRRecon.method"))


def candidate_prior(scene):
    """The first volume in the scene that can be a prior (see is_patient_image), or None."""
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
        if is_patient_image(node):
            return node
    return None


def show_in_standard_views(scene, background=None, foreground=None, foreground_opacity=0.5,
                           views=STANDARD_VIEWS) -> int:
    """Put volumes in the Red/Yellow/Green slice views only, so comparison views keep their
    volumes. Returns how many views were set."""
    count = 0
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        if composite.GetLayoutName() not in views:
            continue
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(foreground_opacity if foreground is not None else 0.0)
        count += 1
    return count
