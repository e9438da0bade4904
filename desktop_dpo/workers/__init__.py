"""The only bridge between threads: QtCore workers that drive core generators off the GUI thread."""
