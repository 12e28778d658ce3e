"""``python -m keras_advseg.cli``: the ``advseg`` console script."""

from keras_advseg.cli import run

if __name__ == "__main__":
    run()
