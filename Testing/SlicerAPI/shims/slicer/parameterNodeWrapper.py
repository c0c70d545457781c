"""Import-only stand-in for Slicer's parameterNodeWrapper, so that CI (which has no Slicer source)
can import the module file and read the parameter node's real type annotations. It checks
nothing itself; Testing/SlicerAPI/test_module_in_slicer.py runs Slicer's real package."""

import abc


class _Annotation:
    def __init__(self, *args):
        self.args = args


class Choice(_Annotation):
    pass


class Default(_Annotation):
    pass


class WithinRange(_Annotation):
    pass


class Decimals(_Annotation):
    pass


class SingleStep(_Annotation):
    pass


class GuiConnector(abc.ABC):
    def __init__(self):
        self._callback = None


def parameterNodeWrapper(classtype):
    return classtype
