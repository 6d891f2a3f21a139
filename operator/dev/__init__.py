"""What only serves development: nothing here runs in the operator's image.

- :mod:`mlserve.operator.dev.cluster`: a real Kubernetes control plane on this machine (etcd,
  kube-apiserver, controller manager, scheduler, kwok), for the tests, the demo and the
  benchmarks (``mlserve dev``);
- :mod:`mlserve.operator.dev.demo`: ``mlserve demo``, the whole flow on that control plane;
- :mod:`mlserve.operator.dev.mariadb`: a throwaway MariaDB server, for the tests and the benchmarks;
- :mod:`mlserve.operator.dev.darwin`: Darwin's writes (seed a serve, deploy) in plain SQL.

The operator's layers (spec, render, reconcile) never import this package; scripts/check's
import contracts hold it to that.
"""
