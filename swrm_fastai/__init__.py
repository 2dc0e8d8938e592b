__version__ = "0.4.0"

# Importing fastai (fastai/layers.py) runs `torch.jit.script`, which torch
# deprecates with a FutureWarning that names the user's site-packages and that no user of this package can act on.
import warnings as _warnings
_warnings.filterwarnings('ignore', message=r'`torch.jit.script` is deprecated', category=FutureWarning)
