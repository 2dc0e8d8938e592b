"""Independent references for the tests: the paper's formulas written out with plain Python arithmetic (or float64
autograd), never through the package's code paths. Each is defined once here and imported by the test files."""
import math
import torch


def ref_weight(n, members, c):
    "Eq. 2 for one class, written out with plain Python arithmetic"
    return math.log(1 + max(n) / n[c] * sum(n[i] for i in members) / len(members) / n[c])


def ref_margin(p, members, c, beta=1., tau=1.):
    "Eq. 3 for one class with plain Python arithmetic: ln(mean over the window of sim^-beta)"
    mean = sum(p) / len(p); std = math.sqrt(sum((x - mean)**2 for x in p) / len(p))
    q = [(x - mean) / std for x in p]
    sims = [math.exp(-abs(q[i] - q[c]) / tau) for i in members]
    return math.log(sum(s ** -beta for s in sims) / len(members))


def autograd_margins(p, mem, beta, tau):
    "Eq. 3 on all classes through plain autograd ops: logsumexp over the window of beta |q_i - q_c| / tau, minus ln W"
    q = (p - p.mean()) / p.std(unbiased=False)
    return torch.logsumexp(beta * (q[mem] - q[:, None]).abs() / tau, 1) - math.log(mem.shape[1])


def ref_loss(z, y, w=None, m=None, o=None, s=1., gamma=0.):
    "Independent reference: an explicit per-sample loop in float64"
    z = z.double(); out = []
    for b in range(len(y)):
        c = int(y[b]); row = z[b].clone()
        if o is not None: row = row + o.double()
        if m is not None: row[c] = row[c] + float(m[c])
        row = s * row
        logp = row[c] - math.log(sum(math.exp(float(v)) for v in row))
        loss = -float(logp) * (1 - math.exp(float(logp)))**gamma
        out.append((1. if w is None else float(w[c])) * loss)
    return torch.tensor(out, dtype=torch.float64)


def ref_pairs(n, members, p, tau=1.):
    "The pairwise window margins P[c, j] = sim(c, j) max(0, ln n_j - ln n_c) for j in c's window, by a loop over classes"
    q = (p - p.mean()) / p.std(unbiased=False); C = len(n); P = torch.zeros(C, C, dtype=torch.float64)
    for c in range(C):
        for j in members[c].tolist():
            P[c, j] = math.exp(-abs(q[c] - q[j]) / tau) * max(0., math.log(n[j]) - math.log(n[c]))
    return P
