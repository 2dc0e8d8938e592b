"`from swrm_fastai.all import *`: every public name of the package, as `fastai.vision.all` does for fastai."
# Written by hand (like fastai's own `all.py` files): nbdev exports the modules below from nbs/, not this file.
from .similarity import *
from .losses import *
from .data import *
from .metrics import *
from .callback import *
from .interpret import *
