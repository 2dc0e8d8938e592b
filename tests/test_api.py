"The public API: `swrm_fastai.all` exports at most 70 names of its own, and none of them shadows a name of fastai"
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
import fastai.vision.all as fv
import swrm_fastai.all as A

def test_all_is_small_and_resolves():
    assert len(A.__all__) <= 70, len(A.__all__)
    assert len(set(A.__all__)) == len(A.__all__)
    for name in A.__all__: assert getattr(A, name).__module__.startswith('swrm_fastai.'), name

def test_no_name_shadows_fastai():
    clash = sorted(n for n in A.__all__ if n in dir(fv))
    assert not clash, f"names of swrm_fastai.all that shadow fastai.vision.all: {clash}"

def test_star_import_gives_exactly_all():
    ns = {}
    exec('from swrm_fastai.all import *', ns)
    assert sorted(k for k in ns if not k.startswith('__')) == sorted(A.__all__)

def test_no_module_shadows_fastai():
    "Not even a module's own `__all__` reuses a fastai name (a star import of any module is safe)"
    import swrm_fastai.similarity, swrm_fastai.losses, swrm_fastai.models, swrm_fastai.patches, swrm_fastai.data
    import swrm_fastai.metrics, swrm_fastai.callback, swrm_fastai.interpret, swrm_fastai.report, swrm_fastai.bench
    import swrm_fastai.core, swrm_fastai.experiments, swrm_fastai.render, swrm_fastai.rebalance, swrm_fastai.own_data
    mods = [swrm_fastai.similarity, swrm_fastai.losses, swrm_fastai.models, swrm_fastai.patches, swrm_fastai.data,
            swrm_fastai.metrics, swrm_fastai.callback, swrm_fastai.interpret, swrm_fastai.report, swrm_fastai.bench,
            swrm_fastai.core, swrm_fastai.experiments, swrm_fastai.render, swrm_fastai.rebalance, swrm_fastai.own_data]
    clash = {m.__name__: sorted(set(m.__all__) & set(dir(fv))) for m in mods}
    assert not any(clash.values()), clash

def test_patches_applied():
    from fastai.learner import Learner
    from fastai.interpret import ClassificationInterpretation
    assert hasattr(Learner, 'fit_paper') and hasattr(Learner, '_fastai_save')
    assert hasattr(ClassificationInterpretation, 'tail_confusions') and hasattr(A.DySWRMLoss, 'from_dls')

def test_experiments_not_in_public_api():
    "The window-on-LA losses that did not beat logit adjustment live in `experiments`, outside the public API and the core"
    import swrm_fastai.losses as L, swrm_fastai.experiments as E
    from swrm_fastai.callback import WINDOW_LOSSES
    for name in ('PairwiseWindowLoss', 'TemperedWindowLoss', 'DyPairwiseWindowLoss', 'DySWRMPullLoss', 'PairOffsets'):
        assert name not in A.__all__ and name in E.__all__ and not hasattr(L, name), name
    # what only the experiments need is not in the core: no [C, C] offsets, no ascending Adam, no pull term
    import inspect
    assert 'pull' not in inspect.signature(L.DySWRMLoss).parameters
    assert 'maximize' not in inspect.signature(L.LearnedPositions._init_positions).parameters
    assert {'pairwise', 'tempered', 'dypairwise'} <= set(WINDOW_LOSSES)  # registered by importing experiments
