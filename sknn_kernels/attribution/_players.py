"""Players of an input-share game: named inputs, or groups of channels of one tensor.

:class:`Players` says which part of the network's input each player owns and builds the inputs
of a coalition (players in it keep the sample's values, the others take a baseline row).
:func:`shapley_weights` turns the values of all ``2^m`` coalitions into exact Shapley values,
:func:`group_sums` sums per-element attributions (integrated gradients...) per player.
"""

from math import factorial

import numpy as np
import torch

from ..network._adapter import Inputs

__all__ = ["Players", "coalitions", "group_sums", "shapley_weights"]


class Players:
    """Who owns which part of the input.

    Parameters
    ----------
    names : tuple of str
    key_player : dict of str to int or None
        Named inputs: input key -> player index.
    channel_player : ndarray of int or None
        One tensor: channel (position along ``axis``) -> player index.
    axis : int
        The grouped axis of one sample's tensor (0 is the first per-sample axis).
    """

    def __init__(self, names, *, key_player=None, channel_player=None, axis=0):
        self.names = tuple(names)
        self.key_player = key_player
        self.channel_player = None if channel_player is None else np.asarray(channel_player)
        self.axis = axis

    def __len__(self):
        return len(self.names)

    def mix(self, x, base, members):
        """Inputs whose row ``r`` takes ``x[r]`` on the players in ``members[r]``, else ``base[r]``.

        ``x`` and ``base`` are :class:`Inputs` of the same length, ``members`` a bool tensor of
        shape ``(rows, m)``.
        """
        if x.named:
            mixed = {}
            for key, value in x.data.items():
                keep = members[:, self.key_player[key]].reshape((-1,) + (1,) * (value.ndim - 1))
                mixed[key] = torch.where(keep, value, base.data[key])
            return Inputs(mixed)
        value = x.data
        keep = members[:, torch.as_tensor(self.channel_player)]  # (rows, n_channels)
        shape = [1] * value.ndim
        shape[0], shape[self.axis + 1] = keep.shape
        return Inputs(torch.where(keep.reshape(shape), value, base.data))


def resolve_players(first, groups, group_axis, max_players):
    """:class:`Players` of the network inputs ``first`` (:class:`Inputs`) and ``groups``.

    ``groups`` is None (each named input, or each channel along ``group_axis``, is a
    player) or a dict name -> list of input keys (named inputs) / channel indices (one tensor).
    """
    if groups is not None and (
        not hasattr(groups, "items") or not groups or not all(isinstance(k, str) for k in groups)
    ):
        raise ValueError(
            "groups must be a non-empty dict of player name -> list of input keys (dict "
            "inputs) or of channel indices (one tensor), e.g. {'uv': [0, 1], 'ir': [2, 3]}; "
            f"got {groups!r}."
        )
    if first.named:
        keys = list(first.data)
        groups = groups if groups is not None else {k: [k] for k in keys}
        owner = _owners(groups, keys, "input key")
        players = Players(tuple(groups), key_player={k: owner[k] for k in keys})
    else:
        per_sample = tuple(first.data.shape[1:])
        if not per_sample:
            raise ValueError("Input shares need per-sample features: X has one value per sample.")
        axis = group_axis - 1
        if not 0 <= axis < len(per_sample):
            raise ValueError(
                f"group_axis={group_axis} is not an axis of the network's input (per-sample "
                f"shape {per_sample}; axis 1 is the first per-sample axis)."
            )
        n = per_sample[axis]
        groups = groups if groups is not None else {str(c): [c] for c in range(n)}
        owner = _owners(groups, list(range(n)), f"index along axis {group_axis}")
        players = Players(tuple(groups), channel_player=[owner[c] for c in range(n)], axis=axis)
    if len(players) > max_players:
        raise ValueError(
            f"{len(players)} players need 2^{len(players)} coalitions for exact Shapley "
            f"values; at most max_players={max_players} are allowed. Pass groups= to gather "
            "features into fewer players, or use method='integrated_gradients'."
        )
    return players


def _owners(groups, universe, what):
    owner = {}
    for p, members in enumerate(groups.values()):
        members = [members] if isinstance(members, (str, int, np.integer)) else list(members)
        for item in members:
            item = item if isinstance(item, str) else int(item)
            if item not in universe:
                raise ValueError(f"groups: {item!r} is not a valid {what}; valid: {universe}.")
            if item in owner:
                raise ValueError(f"groups: {item!r} belongs to two players; give it to one.")
            owner[item] = p
    missing = [item for item in universe if item not in owner]
    if missing:
        raise ValueError(
            f"groups: {missing} belong to no player; add them to a group (every part of the "
            "input must be owned by one player, so that the shares add up)."
        )
    return owner


def coalitions(m):
    """All ``2^m`` coalitions as a ``(2^m, m)`` bool tensor; row ``s`` holds the bits of ``s``."""
    s = torch.arange(2**m)
    return (s[:, None] >> torch.arange(m)) & 1 == 1


def shapley_weights(m):
    """``W`` of shape ``(2^m, m)`` with ``φ = v @ W`` for the values ``v`` of all coalitions.

    ``φ_i = Σ_{S ∌ i} |S|! (m - |S| - 1)! / m! (v(S ∪ {i}) - v(S))``.
    """
    Z = coalitions(m).numpy()
    size = Z.sum(1)
    w = np.array([factorial(k) * factorial(m - k - 1) / factorial(m) for k in range(m)])
    W = np.where(Z, w[np.clip(size - 1, 0, m - 1)][:, None], -w[np.clip(size, 0, m - 1)][:, None])
    return W.astype(np.float64)


def group_sums(players, attributions, keys=None):
    """Per-element attributions (tensors, as the inputs) summed per player: ``(n, m)``."""
    n = attributions[0].shape[0]
    out = torch.zeros(n, len(players), dtype=torch.float64)
    if keys is not None:
        for key, a in zip(keys, attributions):
            out[:, players.key_player[key]] += a.reshape(n, -1).sum(1).double()
        return out.numpy()
    a = attributions[0].double().movedim(players.axis + 1, 1)
    per_channel = a.reshape(n, a.shape[1], -1).sum(2)
    out.index_add_(1, torch.as_tensor(players.channel_player), per_channel)
    return out.numpy()
