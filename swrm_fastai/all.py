"`from swrm_fastai.all import *`: the public API of the package, as `fastai.vision.all` is fastai's."
# Written by hand (like fastai's own `all.py` files): nbdev exports the modules below from nbs/, not this file.
# The names a user trains, evaluates and plots with; helpers stay in their modules (`swrm_fastai.similarity.window_margins`, ...),
# and the window-on-logit-adjustment experiments that did not beat logit adjustment live in `swrm_fastai.experiments`
# (`PairwiseWindowLoss`, `TemperedWindowLoss`, `DyPairwiseWindowLoss`: kept to reproduce their tables, not recommended).
# Importing it also adds the package's methods to fastai classes: `Learner.fit_paper` (models), `Learner.save`/`load`
# keeping the package's loss (patches), `DySWRMLoss.from_dls` (losses) and the long-tailed `ClassificationInterpretation`
# methods (interpret). `tests/test_api.py` keeps it at most 70 names, none of them a name of `fastai.vision.all`.
from .similarity import SimilarityWindow, embed_1d, window_members, swr_weights, swm_margins, window_chance, lookalike_share
from .losses import (margin_ce, MarginCELoss, SWRMLoss, SWRLoss, SWMLoss, DySWRMLoss, cb_weights, ClassBalancedLoss,
                     ldam_margins, LDAMLoss, posthoc_adjust, LogitAdjustedLoss, BalancedSoftmaxLoss)
from .models import SmallResNet, resnet32, small_resnet, lt_resnet10, lt_resnet18, NormedLinear, cosine_head, paper_schedule
from .patches import sidecar_path
from .core import class_counts
from .data import (long_tail_counts, long_tail_indices, arrays_lt_dls, fashion_mnist_lt, glyphs_lt, cifar_lt,
                   imagenet_lt, places_lt, cjk_lt, cjk_lt_ft)
from .metrics import shot_groups, per_class_accuracy, ShotAccuracy, shot_metrics, shot_accuracy_table
from .callback import class_prototypes, LossSwitchCallback, SimilarityWindowCallback, DeferredReweighting, SkipValidation, EpochTimer
from .interpret import (confusion_from_preds, tail_confusion_table, compare_confusions, shot_report, plot_lt_confusion_matrix,
                        plot_class_weights)
from .rebalance import (resampled_dls, DeferredResampling, crt, ClassifierRetraining, TauNormalization, EQLLoss,
                        ClassDifficultyWeighting)
from .own_data import own_dls, compare_losses

__all__ = ['SimilarityWindow', 'embed_1d', 'window_members', 'swr_weights', 'swm_margins', 'window_chance', 'lookalike_share',
           'margin_ce', 'MarginCELoss', 'SWRMLoss', 'SWRLoss', 'SWMLoss', 'DySWRMLoss', 'cb_weights', 'ClassBalancedLoss',
           'ldam_margins', 'LDAMLoss', 'posthoc_adjust', 'LogitAdjustedLoss', 'BalancedSoftmaxLoss',
           'SmallResNet', 'resnet32', 'small_resnet', 'lt_resnet10', 'lt_resnet18', 'NormedLinear', 'cosine_head', 'paper_schedule',
           'sidecar_path',
           'class_counts', 'long_tail_counts', 'long_tail_indices', 'arrays_lt_dls', 'fashion_mnist_lt', 'glyphs_lt', 'cifar_lt',
           'imagenet_lt', 'places_lt', 'cjk_lt', 'cjk_lt_ft',
           'shot_groups', 'per_class_accuracy', 'ShotAccuracy', 'shot_metrics', 'shot_accuracy_table',
           'class_prototypes', 'LossSwitchCallback', 'SimilarityWindowCallback', 'DeferredReweighting', 'SkipValidation', 'EpochTimer',
           'confusion_from_preds', 'tail_confusion_table', 'compare_confusions', 'shot_report', 'plot_lt_confusion_matrix',
           'plot_class_weights',
           'resampled_dls', 'DeferredResampling', 'crt', 'ClassifierRetraining', 'TauNormalization', 'EQLLoss',
           'ClassDifficultyWeighting',
           'own_dls', 'compare_losses']
