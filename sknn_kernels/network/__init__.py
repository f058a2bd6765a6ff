"""Holding and calling the user's network: the lowest layer of the package.

``_adapter`` (torch only) unwraps skorch nets and ``FrozenEstimator``, keeps a private eval-mode
copy, moves inputs and calls the network; ``_base`` is the sklearn side shared by every estimator
that holds a network (validation, the cached adapter, pickling); ``_input_errors`` turns a failed
call into a message that names the problem and its fix. Nothing here imports from the layers above.
"""
