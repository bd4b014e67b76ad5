"""``slicer.i18n`` double: translation functions return the source text."""


def tr(text: str) -> str:
    return text


def translate(context: str, text: str) -> str:
    return text
