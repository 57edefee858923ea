"""How a class name reads on screen: data sets write `listening_to_music`, people read "listening to music"."""


def spoken(label: str) -> str:
    return label.replace("_", " ")


def picture_name(filename: str) -> str:
    """How a picture's file reads on screen: its name without its folder. A Kaggle folder keeps every picture
    under train/, test ones too, so "train/Image_12267.jpg" beside a test answer reads as a training picture."""
    return filename.split("/")[-1]
