__version__ = "1.1.0"  # written into every model card (src/formats/model_card.py)
