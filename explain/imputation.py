"""ROAD's noisy linear imputation, solved fast (explain.road adds the noise and scores it):
each removed pixel is the weighted mean of its 8 neighbours (1/6 for the four direct ones, 1/12
for the diagonals; a neighbour outside the image does not count), one sparse linear system over
the removed pixels, the library's system (unknowns in row-major order) to 1e-6.

The system is built from index arrays (no ``lil_matrix``) on the removed pixels' bounding box,
and solved by conjugate gradients (float64) with a geometric multigrid preconditioner (float32:
damped Jacobi, bilinear transfers, Galerkin coarse operators computed by probing, OpenCV filters
for the fine level) to a relative residual of ``TOLERANCE``; systems of up to ``DIRECT_MAX``
unknowns, and any the iteration does not finish, take SuperLU directly. When every pixel is
removed nothing is known: the solution is 0 (see explain.road)."""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

TOLERANCE = 1e-6  # relative residual per channel: the imputation agrees to about 1e-6
DIRECT_MAX = 16000  # unknowns: up to this many, SuperLU (exact, and quicker when small)
COARSEST = 3000  # unknowns on the multigrid's last level (solved directly)
SMOOTHING = 2  # damped Jacobi steps before and after the coarse correction
REGULARISE = 1e-6  # the last level's diagonal is (1 + this) times the Galerkin one
JACOBI = 0.9  # damping of the fine level's Jacobi steps (fewer cycles than 2/3 here)
DTYPE = np.float32  # the multigrid cycle (conjugate gradients run in float64)
# (row offset, column offset, weight) of the 8 neighbours, in the library's order
NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
              (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))
_KERNEL = np.zeros((3, 3))
for _dr, _dc, _w in NEIGHBOURS:
    _KERNEL[1 + _dr, 1 + _dc] = _w
_LAPLACE = -_KERNEL
_LAPLACE[1, 1] = 1.0  # x - (weighted neighbours): A inside the image
_STENCIL = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]  # index 4: the pixel itself
_HAT = np.array([0.5, 1.0, 0.5])  # bilinear interpolation, one axis


def solve(img: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The imputed values without noise: (N, C) float64 for the N unknown pixels in row-major
    order, from ``img`` (C, H, W) and ``keep`` (H, W)."""
    channels = img.shape[0]
    if not keep.any():  # nothing known: the system's solution is 0 (see the module text)
        return np.zeros((keep.size, channels))
    grid = _Grid(img, keep)
    if grid.unknowns > DIRECT_MAX:
        x = _Multigrid(grid).solve(grid.rhs)
        if x is not None:
            return x[grid.unknown]
    return _direct(grid)


class _Grid:
    """The system on the removed pixels' bounding box grown by one pixel: unknown mask, the
    diagonal (the weights of the neighbours inside the image) and the right-hand side (the
    weighted known neighbours), as (h, w, C) float64 arrays; pixels outside the box are
    neither unknown nor neighbours of one."""

    def __init__(self, img: np.ndarray, keep: np.ndarray) -> None:
        height, width = keep.shape
        rows = np.flatnonzero(~keep.all(axis=1))
        cols = np.flatnonzero(~keep.all(axis=0))
        r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
        c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, width)
        self.unknown = ~keep[r0:r1, c0:c1]
        self.unknowns = int(self.unknown.sum())
        h, w = self.unknown.shape
        rr, cc = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]
        diag = np.ones((h, w))
        for dr, dc, weight in NEIGHBOURS:  # the library's order of subtraction
            outside = (rr + dr < 0) | (rr + dr >= height) | (cc + dc < 0) | (cc + dc >= width)
            diag = np.where(outside, diag - weight, diag)
        channels = img.shape[0]
        self.mask = np.repeat(self.unknown[:, :, None], channels, axis=2).astype(np.float64)
        self.diag = np.repeat(diag[:, :, None], channels, axis=2)
        known = np.ascontiguousarray(img[:, r0:r1, c0:c1].transpose(1, 2, 0), np.float64)
        known *= 1.0 - self.mask
        self.rhs = _filter(known, _KERNEL) * self.mask
        self.edges = _Edges(diag - 1.0)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A x (A symmetric positive definite: diag on the diagonal, -weight to an unknown
        neighbour), for x zero outside the unknowns."""
        return self.mask * self.edges.add(_filter(x, _LAPLACE), x)


class _Edges:
    """diag - 1 on the box's first and last rows and columns, the only pixels where it is not
    0 (pixels on the image's border): ``add(y, x)`` adds (diag - 1) x to y there, so that A x
    is one filter with the kernel 1 - weights plus this."""

    def __init__(self, excess: np.ndarray) -> None:
        h, w = excess.shape
        spans = ((slice(0, 1), slice(None)), (slice(h - 1, h), slice(None)),
                 (slice(1, h - 1), slice(0, 1)), (slice(1, h - 1), slice(w - 1, w)))
        self.spans = [(rows, cols, excess[rows, cols][:, :, None]) for rows, cols in spans
                      if h > 1 and np.any(excess[rows, cols])]

    def add(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        for rows, cols, excess in self.spans:
            y[rows, cols] += excess.astype(y.dtype) * x[rows, cols]
        return y


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlation of each channel of x (h, w, C) with a 3 x 3 kernel, zero outside."""
    out = cv2.filter2D(np.ascontiguousarray(x), -1, kernel.astype(x.dtype),
                       borderType=cv2.BORDER_CONSTANT)
    return out.reshape(x.shape)


def _direct(grid: _Grid) -> np.ndarray:
    """SuperLU on the system of the unknowns (ordered for a symmetric matrix)."""
    h, w = grid.unknown.shape
    index = np.full((h + 2, w + 2), -1)
    r, c = np.nonzero(grid.unknown)
    index[r + 1, c + 1] = np.arange(len(r))
    rows, cols, vals = [np.arange(len(r))], [np.arange(len(r))], [grid.diag[r, c, 0]]
    for dr, dc, weight in NEIGHBOURS:
        j = index[r + 1 + dr, c + 1 + dc]
        ok = j >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(j[ok])
        vals.append(np.full(int(ok.sum()), -weight))
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(r), len(r)))
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
              options={"SymmetricMode": True})
    return lu.solve(grid.rhs[r, c])


# ---- the multigrid preconditioner ----------------------------------------------------------

class _FineOp:
    """The fine level in float32: A from the grid (an OpenCV filter and two products)."""

    def __init__(self, grid: _Grid) -> None:
        self.shape = grid.unknown.shape
        self.active = grid.unknown
        self.masks = {grid.mask.shape[2]: grid.mask.astype(DTYPE),
                      1: grid.unknown[:, :, None].astype(DTYPE)}
        self.diags = {grid.mask.shape[2]: grid.diag.astype(DTYPE),
                      1: grid.diag[:, :, :1].astype(DTYPE)}
        self.mask = self.masks[grid.mask.shape[2]]
        self.edges = grid.edges
        # damped Jacobi, JACOBI of 1/diag: the off-diagonal weights of a row sum to its diagonal
        self.jacobi = JACOBI * self.mask / self.diags[grid.mask.shape[2]]

    def apply(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[2] if x.shape[2] in self.masks else 1
        return self.masks[n] * self.raw(x)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """A x on the unknowns, anything elsewhere (for a product that masks it anyway)."""
        return self.edges.add(_filter(x, _LAPLACE), x)


class _StencilOp:
    """A coarse level: a 9-point stencil per point (Galerkin). Points whose interpolation
    reaches no active finer point are inactive (identity, and zero in every vector). Where
    the active finer points are few (a lone removed pixel between four coarse points), the
    interpolations of several coarse points can coincide: the operator is then only
    semi-definite, harmless for Jacobi steps and for the finer levels (what it cannot tell
    apart interpolates to zero), and the last level's solve adds a tiny diagonal."""

    def __init__(self, stencil: np.ndarray, active: np.ndarray, channels: int) -> None:
        self.active = active
        stencil[:, ~active] = 0.0
        stencil[4][~active] = 1.0
        self.stencil = stencil
        self.shape = self.active.shape
        self.stencils = {1: stencil[..., None], channels: np.repeat(stencil[..., None], channels, 3)}
        self.flats: dict[int, np.ndarray] = {}
        self.mask = np.repeat(self.active[:, :, None], channels, 2).astype(DTYPE)
        spread = (np.abs(stencil).sum(axis=0) / stencil[4])[self.active].max()
        self.jacobi = 4 / (3 * spread) * self.mask / self.stencils[channels][4]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The stencil on a zero-padded copy of x, flattened: each neighbour is a fixed
        offset, so each term is one product of contiguous runs."""
        channels = x.shape[2]
        s = self._flat(channels)
        h, w = self.shape
        padded = np.zeros((h + 2, w + 2, channels), DTYPE)
        padded[1:-1, 1:-1] = x
        flat, row = padded.reshape(-1), (w + 2) * channels
        lo, hi = row + channels, flat.size - row - channels
        y = np.zeros_like(flat)
        for k, (dr, dc) in enumerate(_STENCIL):
            offset = dr * row + dc * channels
            y[lo:hi] += s[k, lo:hi] * flat[lo + offset:hi + offset]
        return y.reshape(padded.shape)[1:-1, 1:-1]

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.apply(x)

    def _flat(self, channels: int) -> np.ndarray:
        """The stencil padded like the vectors and flattened, (9, (h + 2) (w + 2) C)."""
        if channels not in self.flats:
            h, w = self.shape
            padded = np.zeros((9, h + 2, w + 2, channels), DTYPE)
            padded[:, 1:-1, 1:-1] = self.stencil[..., None]
            self.flats[channels] = padded.reshape(9, -1)
        return self.flats[channels]


def _restrict(r: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """P^T r: bilinear interpolation's transpose, fine point 2J -> coarse point J."""
    hc, wc = shape
    f = np.zeros((2 * hc - 1, 2 * wc - 1, r.shape[2]), DTYPE)
    f[:r.shape[0], :r.shape[1]] = r
    g = cv2.sepFilter2D(f, -1, _HAT, _HAT, borderType=cv2.BORDER_CONSTANT).reshape(f.shape)
    return np.ascontiguousarray(g[::2, ::2])


def _prolong(c: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """P c: bilinear interpolation to the finer grid, zero where the finer level has no
    unknown."""
    hc, wc = c.shape[:2]
    f = np.zeros((2 * hc - 1, 2 * wc - 1, c.shape[2]), DTYPE)
    f[::2, ::2] = c
    g = cv2.sepFilter2D(f, -1, _HAT, _HAT, borderType=cv2.BORDER_CONSTANT).reshape(f.shape)
    return g[:shape[0], :shape[1]] * mask


def _galerkin(op, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The coarse points (those whose interpolation reaches an active finer point) and the
    coarse operator P^T A P on
    them as a 9-point stencil (9, hc, wc): A applied to the interpolations of 9 probes, each
    a coarse point in every 3 x 3 block."""
    hc, wc = shape
    h, w = op.shape
    padded = np.zeros((2 * hc + 1, 2 * wc + 1), bool)
    padded[1:h + 1, 1:w + 1] = op.active
    active = np.zeros(shape, bool)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            active |= padded[dr:dr + 2 * hc:2, dc:dc + 2 * wc:2]
    i, j = np.mgrid[:hc, :wc]
    probes = np.zeros((hc, wc, 9), DTYPE)
    probes[i, j, (i % 3) * 3 + j % 3] = active
    mask = op.active[:, :, None].astype(DTYPE)
    y = _restrict(op.apply(_prolong(probes, mask, op.shape)) * mask, shape)
    stencil = np.zeros((9, hc, wc), DTYPE)
    for k, (dr, dc) in enumerate(_STENCIL):
        inside = (i + dr >= 0) & (i + dr < hc) & (j + dc >= 0) & (j + dc < wc)
        probe = ((i + dr) % 3) * 3 + (j + dc) % 3
        stencil[k] = np.where(inside, np.take_along_axis(y, probe[..., None], 2)[..., 0], 0)
    return stencil, active


def _stencil_lu(op: _StencilOp):
    """SuperLU of the last level's active points, with REGULARISE x its diagonal added (the
    level can be semi-definite, see _StencilOp)."""
    h, w = op.shape
    index = np.full((h + 2, w + 2), -1)
    r, c = np.nonzero(op.active)
    index[r + 1, c + 1] = np.arange(len(r))
    rows, cols, vals = [], [], []
    for k, (dr, dc) in enumerate(_STENCIL):
        j = index[r + 1 + dr, c + 1 + dc]
        ok = j >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(j[ok])
        vals.append(op.stencil[k][r[ok], c[ok]].astype(np.float64) * (1 + REGULARISE * (k == 4)))
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(r), len(r)))
    return splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                options={"SymmetricMode": True})


class _Multigrid:
    """Conjugate gradients on the grid's system, preconditioned by a multigrid V-cycle."""
    MAX_ITERATIONS = 100

    def __init__(self, grid: _Grid) -> None:
        self.grid = grid
        channels = grid.rhs.shape[2]
        op, self.levels = _FineOp(grid), []
        while op.active.sum() > COARSEST and min(op.shape) > 4:
            self.levels.append(op)
            op = _StencilOp(*_galerkin(op, (op.shape[0] // 2 + 1, op.shape[1] // 2 + 1)),
                            channels)
        self.last = op
        self.lu = _stencil_lu(op) if self.levels else None

    def cycle(self, b: np.ndarray, level: int = 0) -> np.ndarray:
        """One V-cycle (SMOOTHING damped Jacobi steps before and after) on A x = b, float32."""
        if level == len(self.levels):
            x = np.zeros_like(b)
            x[self.last.active] = self.lu.solve(b[self.last.active].astype(np.float64))
            return x
        op = self.levels[level]
        coarse = self.levels[level + 1] if level + 1 < len(self.levels) else self.last
        x = op.jacobi * b
        for _ in range(SMOOTHING - 1):
            x += op.jacobi * (b - op.raw(x))
        r = _restrict(b - op.apply(x), coarse.shape) * coarse.mask
        x += _prolong(self.cycle(r, level + 1), op.mask, op.shape)
        for _ in range(SMOOTHING):
            x += op.jacobi * (b - op.raw(x))
        return x

    def solve(self, b: np.ndarray):
        """x with A x = b to ``TOLERANCE`` (flexible preconditioned CG, float64), or None when
        it does not get there (the caller then solves directly)."""
        if self.lu is None:
            return None
        grid = self.grid
        limit = TOLERANCE * np.sqrt(_dot(b, b))
        x, r = np.zeros_like(b), b.copy()
        z = self.cycle(r.astype(DTYPE)).astype(np.float64)
        p, rz = z.copy(), _dot(r, z)
        for _ in range(self.MAX_ITERATIONS):
            q = grid.apply(p)
            pq = _dot(p, q)
            alpha = np.divide(rz, pq, out=np.zeros_like(rz), where=pq > 0)
            x += alpha * p
            previous, r = r, r - alpha * q
            if np.all(np.sqrt(_dot(r, r)) <= limit):
                return x
            z = self.cycle(r.astype(DTYPE)).astype(np.float64)
            rz_next = _dot(r, z)
            beta = np.divide(rz_next - _dot(previous, z), rz, out=np.zeros_like(rz),
                             where=rz > 0)
            p, rz = z + beta * p, rz_next
        return None


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per channel: the dot product of two (h, w, C) arrays."""
    product = (a * b).reshape(-1, a.shape[2])
    return np.ones(len(product)) @ product  # a matrix-vector product: quicker than einsum
