"""What every conntool interface shares: it runs with the threads its node was given.

The number travels by nipype's own mechanism. An interface whose inputs have a ``num_threads``
trait receives its node's ``n_procs``: ``pe.Node(iface, n_procs=k)`` (and a MapNode's
subnodes) sets ``iface.inputs.num_threads = k``, and ``Node.n_procs`` reads it back (1 by
default), so the number MultiProc and the cluster plugins reserve cores for is the number the
interface sees, in whatever process or batch job runs it (the inputs are pickled with the
node). The trait is ``nohash``: the thread count does not change a node's hash, so a cached
result is reused whatever ``n_procs`` was.

Libraries do not keep to it on their own: numpy's and scipy's OpenBLAS and the OpenMP
runtimes of scikit-learn and torch start one thread per core. Two nodes side by side on two
cores then run four busy-waiting threads, and DIPY's ``mppca`` (an ``eigh`` per voxel) runs
130 times slower than with one thread per node; the last bits of BLAS results also depend on
the thread count (``nilearn.signal.clean`` differs by 5e-8 between one and two threads).
:class:`ConntoolInterface` therefore runs every interface inside :func:`limited_threads`:

* threadpoolctl's ``threadpool_limits`` sets the pools of every BLAS and OpenMP library
  already loaded in the process (two OpenBLAS builds, numpy's and scipy's, and two libgomp,
  scikit-learn's and torch's, in this environment);
* ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set to the same
  number for the duration, because a library reads them when it is loaded and a step may import
  one lazily (brain extraction imports torch inside the node), after threadpoolctl has looked.

Both are restored when the interface returns (a worker runs many nodes, and the Linear plugin
runs them in conntool's own process).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, SimpleInterface, traits
from threadpoolctl import threadpool_limits

from conntool.atlases import Atlas, resolve_atlas
from conntool.series import CHUNK_MB
from conntool.templates import Template

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def limited_threads(n_threads: int):
    """BLAS and OpenMP thread pools limited to ``n_threads`` inside the block (see the module)."""
    n_threads = max(1, int(n_threads))
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(n_threads) for name in THREAD_VARIABLES})
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ConntoolInputSpec(BaseInterfaceInputSpec):
    num_threads = traits.Int(1, usedefault=True, nohash=True,
                             desc="BLAS/OpenMP threads the step may use; set from the node's n_procs")
    chunk_mb = traits.Float(CHUNK_MB, usedefault=True, nohash=True,
                            desc="MB of a series a streaming step holds at once (:mod:`conntool.series`); "
                                 "results do not depend on it")


class AtlasInputSpec(ConntoolInputSpec):
    atlas = traits.Str(mandatory=True, desc="atlas name or path, as given to --atlas")
    atlas_dir = traits.Str("", usedefault=True)
    atlas_map = traits.Str("", usedefault=True, desc="coordinate map into the atlas's template, or ''")


def template_input() -> traits.Dict:
    """The trait by which a node receives the output template (the fields of a Template)."""
    return traits.Dict(mandatory=True, desc="the standard-space template: dataclasses.asdict(Template)")


def node_template(inputs) -> Template:
    """The template a node's ``template`` input describes."""
    return Template(**inputs.template)


def node_atlas(inputs: AtlasInputSpec) -> Atlas:
    """The atlas a node's inputs name (see :func:`conntool.atlases.resolve_atlas`)."""
    return resolve_atlas(inputs.atlas, Path(inputs.atlas_dir) if inputs.atlas_dir else None, inputs.atlas_map)


class ConntoolInterface(SimpleInterface):
    """A SimpleInterface that runs within its node's thread budget (``inputs.num_threads``)."""

    input_spec = ConntoolInputSpec

    def run(self, cwd=None, ignore_exception=None, **inputs):
        n_threads = inputs.get("num_threads", getattr(self.inputs, "num_threads", 1))
        with limited_threads(n_threads):
            return super().run(cwd=cwd, ignore_exception=ignore_exception, **inputs)
