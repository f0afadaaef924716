"""conntool: raw BIDS MRI to functional and structural connectomes."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("conntool")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
