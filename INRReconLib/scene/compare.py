"""Comparison layout (prior | reconstruction | difference [| next fraction]) and tumour statistics.

The layout is a custom Slicer layout of axial slice views with their own singleton tags, so the
user's Red/Yellow/Green views are left alone. Views are linked (slice position, zoom move together)
and share one window/level, so grey values can be compared by eye.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .volumes import add_volume, array_from_volume, ensure_display_node, get_ijk_to_ras

COMPARE_LAYOUT_ID = 8350  # outside Slicer's built-in range (< 1000) and other extensions' usual picks
PROGRESS_LAYOUT_ID = 8349
VIEW_TAGS = ("INRPrior", "INRRecon", "INRDifference", "INRNext")
VIEW_LABELS = {"INRPrior": "P", "INRRecon": "R", "INRDifference": "D", "INRNext": "N"}
VIEW_COLOURS = {"INRPrior": "#E69F00", "INRRecon": "#56B4E9", "INRDifference": "#CC79A7", "INRNext": "#009E73"}
PLOT_TAG, TABLE_TAG = "INRPlot", "INRTable"  # the convergence plot, the tumour table


def _slice_view_xml(tag: str, orientation: str = "Axial", label: str = "", colour: str = "") -> str:
    return (f'<item><view class="vtkMRMLSliceNode" singletontag="{tag}">'
            f'<property name="orientation" action="default">{orientation}</property>'
            f'<property name="viewlabel" action="default">{label or VIEW_LABELS[tag]}</property>'
            f'<property name="viewcolor" action="default">{colour or VIEW_COLOURS[tag]}</property>'
            f'<property name="viewgroup" action="default">0</property></view></item>')


def layout_xml(tags) -> str:
    """Slicer layout XML: a row of linked axial slice views, one per tag, above the tumour table
    (a layout without a table view would never show the table Compare makes)."""
    row = "".join(_slice_view_xml(tag) for tag in tags)
    return ('<layout type="vertical" split="true">'
            f'<item splitSize="700"><layout type="horizontal" split="true">{row}</layout></item>'
            f'<item splitSize="300"><view class="vtkMRMLTableViewNode" singletontag="{TABLE_TAG}">'
            '<property name="viewlabel" action="default">T</property></view></item>'
            '</layout>')


def progress_layout_xml() -> str:
    """The three standard slice views (the live preview over the prior) beside the convergence plot."""
    views = "".join(_slice_view_xml(tag, orientation, tag[0], colour) for tag, orientation, colour in (
        ("Red", "Axial", "#F34A33"), ("Yellow", "Sagittal", "#EDD54C"), ("Green", "Coronal", "#6EB04B")))
    return ('<layout type="horizontal" split="true">'
            f'<item><layout type="vertical">{views}</layout></item>'
            f'<item><view class="vtkMRMLPlotViewNode" singletontag="{PLOT_TAG}">'
            '<property name="viewlabel" action="default">P</property></view></item>'
            '</layout>')


def _layout_node(scene):
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    return layout if layout is not None else scene.AddNewNodeByClass("vtkMRMLLayoutNode")


def _select_layout(scene, layout_id: int, xml: str):
    """Register (or update) and select a layout. In Slicer the layout manager creates its views
    now, so they get the layout's labels and colours; view nodes made before would keep theirs."""
    layout = _layout_node(scene)
    if layout.IsLayoutDescription(layout_id):
        layout.SetLayoutDescription(layout_id, xml)
    else:
        layout.AddLayoutDescription(layout_id, xml)
    layout.SetViewArrangement(layout_id)
    return layout


def _view_node(scene, class_name: str, tag: str, on_create=None):
    """The node of a layout's view (or its composite node); created when no layout manager made
    it (tests, CLI), then handed to `on_create`."""
    node = _find_by_layout_name(scene, class_name, tag)
    if node is None:
        node = scene.CreateNodeByClass(class_name)
        node.SetName(tag)
        node.SetLayoutName(tag)
        if on_create is not None:
            on_create(node)
        scene.AddNode(node)
    return node


def show_progress_layout(scene, chart_node=None):
    """Select the progress layout and show `chart_node` (the run's convergence plot) in its plot view."""
    _select_layout(scene, PROGRESS_LAYOUT_ID, progress_layout_xml())
    plot_view = _view_node(scene, "vtkMRMLPlotViewNode", PLOT_TAG, lambda n: n.SetLayoutLabel("P"))
    if chart_node is not None:
        plot_view.SetPlotChartNodeID(chart_node.GetID())
    return plot_view


def show_table(scene, table_node):
    """Show a table in the comparison layout's table view."""
    view = _view_node(scene, "vtkMRMLTableViewNode", TABLE_TAG, lambda n: n.SetLayoutLabel("T"))
    view.SetTableNodeID(table_node.GetID() if table_node is not None else None)
    return view


def resample_like(source, reference) -> np.ndarray:
    """`source`'s voxels on `reference`'s grid (trilinear; zero outside). Same grid: a plain copy."""
    src = np.asarray(array_from_volume(source), dtype=np.float32)
    ref_shape = array_from_volume(reference).shape[:3]
    m_src, m_ref = get_ijk_to_ras(source), get_ijk_to_ras(reference)
    if src.shape == ref_shape and np.allclose(m_src, m_ref, atol=1e-4):
        return src.copy()
    from scipy.ndimage import map_coordinates

    ref_to_src = np.linalg.inv(m_src) @ m_ref  # reference IJK -> source IJK
    nz, ny, nx = ref_shape
    out = np.zeros(ref_shape, np.float32)
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    for k in range(nz):  # slice by slice keeps memory at one plane of coordinates
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        s = ref_to_src @ ijk
        out[k] = map_coordinates(src, [s[2], s[1], s[0]], order=1, mode="constant", cval=0.0).reshape(ny, nx)
    return out


def resample_labels_like(labelmap, reference) -> np.ndarray:
    """Nearest-neighbour labels of `labelmap` on `reference`'s grid."""
    lab = np.asarray(array_from_volume(labelmap))
    ref_shape = array_from_volume(reference).shape[:3]
    m_lab, m_ref = get_ijk_to_ras(labelmap), get_ijk_to_ras(reference)
    if lab.shape == ref_shape and np.allclose(m_lab, m_ref, atol=1e-4):
        return lab.copy()
    ref_to_lab = np.linalg.inv(m_lab) @ m_ref
    nz, ny, nx = ref_shape
    out = np.zeros(ref_shape, lab.dtype)
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    for k in range(nz):
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        s = np.rint(ref_to_lab @ ijk).astype(int)
        inside = np.all((s[:3] >= 0) & (s[:3] < np.array(lab.shape[::-1])[:, None]), axis=0)
        values = np.zeros(ii.size, lab.dtype)
        values[inside] = lab[s[2, inside], s[1, inside], s[0, inside]]
        out[k] = values.reshape(ny, nx)
    return out


def difference_volume(scene, reconstruction, prior, name: str | None = None):
    """A new volume: reconstruction − prior, on the reconstruction's grid."""
    diff = np.asarray(array_from_volume(reconstruction), np.float32) - resample_like(prior, reconstruction)
    return add_volume(scene, diff, get_ijk_to_ras(reconstruction),
                      name or f"{reconstruction.GetName()} - {prior.GetName()}")


def _find_by_layout_name(scene, class_name: str, tag: str):
    for n in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(n, class_name)
        if node.GetLayoutName() == tag:
            return node
    return None


def ensure_slice_view_nodes(scene, tag: str):
    """The (slice node, slice composite node) of a comparison view, created when the layout
    manager has not; label, colour and view group are set either way, so they hold however the
    node came to be."""
    def axial(node):
        if node.HasSliceOrientationPreset("Axial"):
            node.SetOrientation("Axial")

    slice_node = _view_node(scene, "vtkMRMLSliceNode", tag, axial)
    slice_node.SetLayoutLabel(VIEW_LABELS.get(tag, tag[-1]))
    colour = VIEW_COLOURS.get(tag)
    if colour:
        slice_node.SetLayoutColor(*(int(colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5)))
    slice_node.SetViewGroup(0)
    composite = _view_node(scene, "vtkMRMLSliceCompositeNode", tag, lambda n: n.SetName(f"{tag} composite"))
    return slice_node, composite


def matched_window(volumes, percentiles=(0.5, 99.5)) -> tuple[float, float]:
    """One (min, max) display range covering the given volumes' robust intensity range."""
    values = np.concatenate([np.asarray(array_from_volume(v), np.float32).ravel() for v in volumes])
    values = values[np.isfinite(values)]
    lo, hi = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


@dataclass
class Comparison:
    """What `setup_comparison` made: view tag -> volume node, the difference node, the window."""

    views: dict = field(default_factory=dict)
    difference_node: object = None
    window: tuple = (0.0, 1.0)
    layout_id: int = COMPARE_LAYOUT_ID


def setup_comparison(scene, prior, reconstruction, next_fraction=None, difference_node=None) -> Comparison:
    """Show prior | reconstruction | difference (| next fraction) in linked axial views.

    Registers and selects the comparison layout on the scene's layout node (when there is one or it
    can be created), puts each volume in its view's background, links the views and gives prior,
    reconstruction and next fraction one window/level; the difference gets a symmetric window.
    """
    if difference_node is None:
        difference_node = difference_volume(scene, reconstruction, prior)
    views = {"INRPrior": prior, "INRRecon": reconstruction, "INRDifference": difference_node}
    if next_fraction is not None:
        views["INRNext"] = next_fraction
    tags = [t for t in VIEW_TAGS if t in views]

    layout_id = COMPARE_LAYOUT_ID + len(tags)
    _select_layout(scene, layout_id, layout_xml(tags))

    for tag in tags:
        _, composite = ensure_slice_view_nodes(scene, tag)
        composite.SetBackgroundVolumeID(views[tag].GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLinkedControl(1)

    lo, hi = matched_window([v for t, v in views.items() if t != "INRDifference"])
    for tag, node in views.items():
        display = ensure_display_node(node, scene)
        display.AutoWindowLevelOff()
        if tag == "INRDifference":
            d = np.abs(np.asarray(array_from_volume(node), np.float32))
            half = float(np.percentile(d[np.isfinite(d)], 99.5)) if d.size else 1.0
            half = half if half > 0 else 1.0
            display.SetWindowLevelMinMax(-half, half)
        else:
            display.SetWindowLevelMinMax(lo, hi)
    return Comparison(views, difference_node, (lo, hi), layout_id)


def tumour_statistics(scene, labelmap, volumes, names=None, label: int | None = None, table_name="Tumour per fraction"):
    """A table node with the tumour's volume (mL) and mean intensity in each volume.

    labelmap: one labelmap volume node for all fractions, or a list with one per fraction.
    label: the label value of the tumour (None: every non-zero voxel). Returns (table node, rows)
    with rows = [{"fraction", "volume_ml", "mean"}].
    """
    import vtk

    labelmaps = list(labelmap) if isinstance(labelmap, (list, tuple)) else [labelmap] * len(volumes)
    names = names or [v.GetName() for v in volumes]
    rows = []
    for lab, vol, name in zip(labelmaps, volumes, names):
        lab_array = np.asarray(array_from_volume(lab))
        own_mask = lab_array != 0 if label is None else lab_array == label
        voxel_mm3 = abs(np.linalg.det(get_ijk_to_ras(lab)[:3, :3]))
        mask = resample_labels_like(lab, vol)
        mask = mask != 0 if label is None else mask == label
        values = np.asarray(array_from_volume(vol), np.float64)[mask]
        rows.append({"fraction": name, "volume_ml": float(own_mask.sum() * voxel_mm3 / 1000.0),
                     "mean": float(values.mean()) if values.size else float("nan")})
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(table_name))
    table = table_node.GetTable()
    columns = {"fraction": vtk.vtkStringArray(), "volume_ml": vtk.vtkDoubleArray(), "mean": vtk.vtkDoubleArray()}
    for column_name, array in columns.items():
        array.SetName(column_name)
        table.AddColumn(array)
    for row in rows:
        columns["fraction"].InsertNextValue(str(row["fraction"]))
        columns["volume_ml"].InsertNextValue(row["volume_ml"])
        columns["mean"].InsertNextValue(row["mean"])
    table.Modified()
    table_node.SetColumnUnitLabel("volume_ml", "mL")
    table_node.SetColumnLongName("volume_ml", "tumour volume")
    table_node.SetColumnLongName("mean", "mean intensity in tumour")
    return table_node, rows
