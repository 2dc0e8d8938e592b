"The refusals of swrm_fastai.core's input checks, each with the message that names the problem"
import pandas as pd, torch
from fastcore.test import test_eq as eq, test_fail as refused
from swrm_fastai.core import check_counts, check_positions, check_window, check_beta_tau

VC = pd.Series(['b'] * 5 + ['a'] * 2 + ['c'] * 9).value_counts()  # c, b, a: frequency order


def test_bad_values_refused():
    refused(lambda: check_counts([3, -1, 2], names=['a','b','c']), contains="class 1 ('b')")
    refused(lambda: check_counts([3, 1], n_classes=3), contains="2 entries but there are 3 classes")
    refused(lambda: check_counts([[3, 1]]), contains="1-D")
    refused(lambda: check_counts([3., float('nan')]), contains="non-finite")
    refused(lambda: check_positions([0., float('inf')]), contains="non-finite")
    refused(lambda: check_positions([0., 1.], n_classes=3), contains="positions has 2 entries but there are 3 classes")


def test_window_beta_tau_refused():
    refused(lambda: check_window(1, 5), contains="2..C")
    refused(lambda: check_window(6, 5), contains="2..C")
    refused(lambda: check_window(2.5, 5), contains="2..C")
    refused(lambda: check_beta_tau(-0.1, 1.), contains="beta")
    refused(lambda: check_beta_tau(1., 0.), contains="tau")


def test_counts_by_name_aligned():
    "Counts as a dict or a pandas Series are aligned by class name, never a torch error"
    eq(check_counts(VC, names=['a', 'b', 'c']), torch.tensor([2., 5., 9.]))
    eq(check_counts({'c': 9, 'a': 2, 'b': 5}, 3, names=('a', 'b', 'c')), torch.tensor([2., 5., 9.]))
    eq(check_counts({1: 5, 0: 2, 2: 9}), torch.tensor([2., 5., 9.]))  # keyed by class index: unambiguous


def test_counts_by_name_refused():
    refused(lambda: check_counts(VC), contains="cannot be put in class order without the class names")
    refused(lambda: check_counts({'a': 2, 'b': 5}), contains="pass names=")
    refused(lambda: check_counts(VC, names=['a', 'b', 'd']), contains="key(s) that are not class names: ['c']")
    refused(lambda: check_counts({'a': 2, 'b': 5}, names=['a', 'b', 'c']), contains="class 2 ('c') has training count 0")
