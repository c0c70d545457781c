"""The numerical building blocks every method shares, each written once:

  krylov.py       conjugate gradients (cg) on a normal equation, CGLS on a least-squares
                  problem (both with a per-iteration callback that can stop them), the power
                  method for operator norms;
  finite_diff.py  forward differences along any axes (space, time) and their exact adjoint.

Tensors only, no knowledge of CT or MR: the operators come in as callables.
"""
