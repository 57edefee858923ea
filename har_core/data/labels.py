"""How a class name reads on screen: data sets write `listening_to_music`, people read "listening to music"."""


def spoken(label: str) -> str:
    return label.replace("_", " ")


def spoken_columns(table, *columns: str):
    """A table (pandas) as a page shows it: its class-name `columns` in words; its CSV download keeps the data
    set's own names."""
    return table.assign(**{column: table[column].map(spoken) for column in columns})


def picture_name(filename: str) -> str:
    """How a picture's file reads on screen: its name without its folder. A Kaggle folder keeps every picture
    under train/, test ones too, so "train/Image_12267.jpg" beside a test answer reads as a training picture."""
    return filename.split("/")[-1]


def breakable(name: str) -> str:
    """A run's name as a narrow card shows it: a line may break after each underscore (a zero-width space there),
    so "efficientnet_lite2" wraps as "efficientnet_" / "lite2" on a projector, never as "efficientnet_li" / "te2"
    (a browser cuts a word too long for its line anywhere)."""
    return name.replace("_", "_\u200b")
