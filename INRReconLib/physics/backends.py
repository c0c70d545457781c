"""The names of the operator backends, the values of the config keys `projector` (CT) and `nufft`
(non-Cartesian MR), and of the ramp filter windows. Torch-free, so that the config options
(methods/options.py) and the Slicer module can list them; the operators (ct_projector.py,
mr_nufft.py) and ct_filters.py implement them."""

PROJECTORS = ("auto", "torch", "astra")
NUFFTS = ("auto", "torchkbnufft", "finufft")
RAMP_WINDOWS = ("ramp", "hann")
