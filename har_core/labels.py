"""How a class name reads on screen: data sets write `listening_to_music`, people read "listening to music"."""


def spoken(label: str) -> str:
    return label.replace("_", " ")
