"""Import-only stand-in for Slicer's i18n (see parameterNodeWrapper.py here)."""


def tr(text):
    return text


def translate(context, text):
    return text
