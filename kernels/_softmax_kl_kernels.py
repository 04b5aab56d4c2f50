"""softmax_kl's Triton kernels: one program per row, or (split rows) several programs per row.

Both variants are built from the same pieces, each over a slice [lo, hi) of a row streamed in BLOCK_V-wide
blocks: `_slice_stats` (online log-sum-exps and the KL numerator), `_slice_mixture_kl` (JSD's KL to the
mixture) and `_slice_gradients`. The row kernel runs them over the whole row in one launch. The split-row
variant, for few long rows, gives each of a row's programs one slice: `_split_stats_kernel` writes each
slice's partial statistics; `_combine_stats` merges a row's partials, in every program of the row (at most
MAX_SPLITS of them, a constexpr, so the number of slices adds no compiled variants); `_split_mixture_kernel`
(JSD only) writes each slice's KL to the mixture; `_split_loss_grad_kernel` writes the row loss (from the
row's first program) and each slice's gradients. With ALTERNATE each pass after the first runs over its
blocks in the other direction from the pass before it (`_block_start`).
"""

from ._dispatch import tl, triton

STATS = 8  # fp32 values per slice in the split statistics buffer: m_s, z_s, m_t, z_t, z_1, kl_num (padded)


@triton.jit
def _online_lse_step(m, z, x, scale):
    # One block of an online log-sum-exp of x * scale, kept relative to the running max m of the raw x:
    # z = sum exp((x - m) * scale). Subtracting before scaling keeps 1e4-sized logits exact.
    # A block of only -inf (masked classes, padding) leaves z at 0 instead of producing NaN.
    m_new = tl.maximum(m, tl.max(x, axis=0))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp((m - m_safe) * scale)
    e = tl.exp((x - m_safe) * scale)
    return m_new, z * alpha + tl.sum(e, axis=0), alpha, e, m_safe


@triton.jit
def _block_start(lo, hi, step, BACKWARDS: tl.constexpr, BLOCK_V: tl.constexpr):
    # Column where step `step` of a pass over [lo, hi) starts: blocks in order, or last to first. A pass that
    # starts where the previous one ended finds those blocks still in L2 (the reuse distance of a row's last
    # blocks is a few blocks, not the row).
    if BACKWARDS:
        return lo + (tl.cdiv(hi - lo, BLOCK_V) - 1 - step) * BLOCK_V
    else:
        return lo + step * BLOCK_V


@triton.jit
def _max_shift(m_old, m_new):
    # How far a running max moved; 0 while nothing finite has been seen (its sums are still 0).
    return tl.where(m_old == float("-inf"), 0.0, m_new - m_old)


@triton.jit
def _xlogy_diff(p, log_p, log_q):
    # p * (log_p - log_q), defined as 0 where p == 0 (a class with no mass: masked, or underflowed).
    return tl.where(p == 0.0, 0.0, p * (log_p - log_q))


@triton.jit
def _log_softmax_block(row_ptr, cols, in_row, m, log_z, scale):
    # log softmax(x * scale) for one block of a row whose max m and log-sum log_z are known.
    x = tl.load(row_ptr + cols, mask=in_row, other=float("-inf")).to(tl.float32)
    return (x - m) * scale - log_z


@triton.jit
def _log_mixture(log_p, log_q, log_w_p, log_w_q):
    # log(w_p * p + w_q * q) from log-probabilities, stable when both are tiny or -inf.
    u = log_p + log_w_p
    v = log_q + log_w_q
    top = tl.maximum(u, v)
    top_safe = tl.where(top == float("-inf"), 0.0, top)
    return top_safe + tl.log(tl.exp(u - top_safe) + tl.exp(v - top_safe))


@triton.jit
def _times_upstream(weight, g_ptr, row, g_stride, HAS_UPSTREAM: tl.constexpr):
    # A row's gradient weight times its upstream gradient (g_stride 0: one value for every row), so that fp16
    # gradients are rounded once, from upstream x slope, as torch rounds them.
    if HAS_UPSTREAM:
        weight = weight * tl.load(g_ptr + row * g_stride).to(tl.float32)
    return weight


@triton.jit
def _row_weight(labels_ptr, counted_ptr, rows_counted, row, V, ignore_index, HAS_LABELS: tl.constexpr,
                COUNT_ON_DEVICE: tl.constexpr):  # fmt: skip
    # (weight, label) of a row: 0 for an ignored row, NaN for a label outside [0, V) (never a silently wrong
    # answer), else 1 / rows counted: at counted_ptr where the labels were counted on the device (batchmean with
    # labels; 1 / 1 when none is), else rows_counted (N for batchmean, 1 for "sum" and "none").
    if COUNT_ON_DEVICE:
        rows_counted = tl.maximum(tl.load(counted_ptr), 1)
    weight = tl.math.div_rn(1.0, rows_counted.to(tl.float32))
    label = -1
    if HAS_LABELS:
        label = tl.load(labels_ptr + row).to(tl.int64)
        counted = label != ignore_index
        weight = tl.where(counted, weight, 0.0)
        weight = tl.where(counted & ~((label >= 0) & (label < V)), float("nan"), weight)
    return weight, label


@triton.jit
def _slice_stats(s_row, t_row, lo, hi, V, scale, DIRECTION: tl.constexpr, HAS_CE: tl.constexpr,
                 BLOCK_V: tl.constexpr):  # fmt: skip
    # Pass 1 over columns [lo, hi): online log-sum-exps of s/T and t/T (and of s at T = 1 for cross-entropy,
    # sharing the max m_s), plus the numerator of the forward or reverse KL, all relative to the running
    # maxima m_s, m_t of the raw logits:
    #   forward: kl_num = sum_j e_t,j * ((t_j - m_t) - (s_j - m_s)),  KL = kl_num / (T z_t) + log z_s - log z_t
    # and when a maximum moves, the old terms are rescaled and shifted by the move.
    m_s = float("-inf")
    z_s = 0.0
    m_t = float("-inf")
    z_t = 0.0
    z_1 = 0.0
    kl_num = 0.0
    for start in range(lo, hi, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        in_slice = cols < V  # slices are whole blocks: only the row's end is partial
        s_raw = tl.load(s_row + cols, mask=in_slice, other=float("-inf")).to(tl.float32)
        t_raw = tl.load(t_row + cols, mask=in_slice, other=float("-inf")).to(tl.float32)
        z_s_old = z_s
        z_t_old = z_t
        m_s_old = m_s
        m_t_old = m_t
        m_s, z_s, alpha_s, e_s, m_s_safe = _online_lse_step(m_s, z_s, s_raw, scale)
        m_t, z_t, alpha_t, e_t, m_t_safe = _online_lse_step(m_t, z_t, t_raw, scale)
        gap = (t_raw - m_t_safe) - (s_raw - m_s_safe)
        shift = _max_shift(m_s_old, m_s) - _max_shift(m_t_old, m_t)
        if DIRECTION == 0:
            kl_num = (kl_num + shift * z_t_old) * alpha_t + tl.sum(tl.where(e_t == 0.0, 0.0, e_t * gap), axis=0)
        if DIRECTION == 1:
            kl_num = (kl_num - shift * z_s_old) * alpha_s - tl.sum(tl.where(e_s == 0.0, 0.0, e_s * gap), axis=0)
        if HAS_CE:
            _, z_1, _, _, _ = _online_lse_step(m_s_old, z_1, s_raw, 1.0)
    return m_s, z_s, m_t, z_t, z_1, kl_num


@triton.jit
def _kl_divergence(kl_num, z_s, z_t, scale, DIRECTION: tl.constexpr):
    # The forward or reverse KL of a row from its statistics (see _slice_stats).
    if DIRECTION == 0:
        divergence = kl_num * scale / z_t + tl.log(z_s) - tl.log(z_t)
    else:
        divergence = kl_num * scale / z_s + tl.log(z_t) - tl.log(z_s)
    return divergence


@triton.jit
def _slice_mixture_kl(s_row, t_row, lo, hi, V, m_s, log_z_s, m_t, log_z_t, scale, log_beta, log_one_minus_beta,
                      BACKWARDS: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    # JSD's pass 2 over [lo, hi): KL of each distribution to the mixture M = beta * p_t + (1 - beta) * p_s.
    kl_t_mix = 0.0
    kl_s_mix = 0.0
    for step in range(0, tl.cdiv(hi - lo, BLOCK_V)):
        cols = _block_start(lo, hi, step, BACKWARDS, BLOCK_V) + tl.arange(0, BLOCK_V)
        in_slice = cols < V  # slices are whole blocks: only the row's end is partial
        log_ps = _log_softmax_block(s_row, cols, in_slice, m_s, log_z_s, scale)
        log_pt = _log_softmax_block(t_row, cols, in_slice, m_t, log_z_t, scale)
        log_m = _log_mixture(log_pt, log_ps, log_beta, log_one_minus_beta)
        kl_t_mix += tl.sum(_xlogy_diff(tl.exp(log_pt), log_pt, log_m), axis=0)
        kl_s_mix += tl.sum(_xlogy_diff(tl.exp(log_ps), log_ps, log_m), axis=0)
    return kl_t_mix, kl_s_mix


@triton.jit
def _store_row_loss(s_row, loss_ptr, row, V, divergence, kd_scale, ce_weight, m_s, log_z_1, label, weight,
                    HAS_CE: tl.constexpr):  # fmt: skip
    # The row's share of the reduced loss: its loss times its weight (0 for an ignored row, whatever its logits).
    loss = kd_scale * divergence
    if HAS_CE:
        s_label = tl.load(s_row + tl.minimum(tl.maximum(label, 0), V - 1)).to(tl.float32)
        loss += ce_weight * (log_z_1 - (s_label - m_s))
    tl.store(loss_ptr + row, tl.where(weight == 0.0, 0.0, loss * weight))


@triton.jit
def _slice_gradients(s_row, t_row, ds_row, dt_row, lo, hi, V, m_s, log_z_s, m_t, log_z_t, log_z_1, divergence,
                     kl_t_mix, kl_s_mix, weight, label, scale, kd_scale, ce_weight, beta, log_beta,
                     log_one_minus_beta, DIRECTION: tl.constexpr, HAS_CE: tl.constexpr, STUDENT_GRAD: tl.constexpr,
                     TEACHER_GRAD: tl.constexpr, BACKWARDS: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    # Last pass over [lo, hi): gradients of the weighted row loss, d/ds = d/da / T, in the inputs' dtypes.
    grad_scale = kd_scale * scale * weight
    for step in range(0, tl.cdiv(hi - lo, BLOCK_V)):
        cols = _block_start(lo, hi, step, BACKWARDS, BLOCK_V) + tl.arange(0, BLOCK_V)
        in_slice = cols < V  # slices are whole blocks: only the row's end is partial
        s_raw = tl.load(s_row + cols, mask=in_slice, other=float("-inf")).to(tl.float32)
        log_ps = (s_raw - m_s) * scale - log_z_s
        log_pt = _log_softmax_block(t_row, cols, in_slice, m_t, log_z_t, scale)
        p_s = tl.exp(log_ps)
        p_t = tl.exp(log_pt)
        if DIRECTION == 0:
            grad_a = p_s - p_t
            grad_b = _xlogy_diff(p_t, log_pt, log_ps) - p_t * divergence
        elif DIRECTION == 1:
            grad_a = _xlogy_diff(p_s, log_ps, log_pt) - p_s * divergence
            grad_b = p_t - p_s
        else:
            log_m = _log_mixture(log_pt, log_ps, log_beta, log_one_minus_beta)
            grad_a = (1.0 - beta) * (_xlogy_diff(p_s, log_ps, log_m) - p_s * kl_s_mix)
            grad_b = beta * (_xlogy_diff(p_t, log_pt, log_m) - p_t * kl_t_mix)
        grad_s = grad_a * grad_scale
        if HAS_CE:
            p_1 = tl.exp((s_raw - m_s) - log_z_1)
            grad_s += ce_weight * weight * (p_1 - tl.where(cols == label, 1.0, 0.0))
        if STUDENT_GRAD:
            grad_s = tl.where(weight == 0.0, 0.0, grad_s)
            tl.store(ds_row + cols, grad_s.to(ds_row.dtype.element_ty), mask=in_slice)
        if TEACHER_GRAD:
            grad_t = tl.where(weight == 0.0, 0.0, grad_b * grad_scale)
            tl.store(dt_row + cols, grad_t.to(dt_row.dtype.element_ty), mask=in_slice)


@triton.jit(do_not_specialize=["rows_counted"])  # N for batchmean: one compiled variant for every N
def _softmax_kl_kernel(
    s_ptr, s_row_units,  # [N, V] student logits, last dim contiguous; the row stride in units of S_ALIGN elements
    t_ptr, t_row_units,  # [N, V] teacher logits, last dim contiguous; the row stride in units of T_ALIGN elements
    labels_ptr,  # [N] integer labels (read when HAS_LABELS)
    counted_ptr,  # [] int64: labelled rows (batchmean's count, read when COUNT_ON_DEVICE)
    rows_counted,  # the rows' weight is 1 / rows_counted unless COUNT_ON_DEVICE
    g_ptr, g_stride,  # [N] upstream gradient of the row losses (stride 0: one value), read when HAS_UPSTREAM
    loss_ptr,  # [N] fp32 per-row loss times the row's weight, output
    ds_ptr,  # [N, V] student gradient, output, contiguous (written when STUDENT_GRAD)
    dt_ptr,  # [N, V] teacher gradient, output, contiguous (written when TEACHER_GRAD)
    v_units,  # V in units of V_ALIGN elements
    inv_temperature,
    kd_scale,  # kd_weight * T^2 (or kd_weight)
    ce_weight, beta, log_beta, log_one_minus_beta, ignore_index,
    DIRECTION: tl.constexpr,  # 0 forward KL(t||s), 1 reverse KL(s||t), 2 JSD
    HAS_LABELS: tl.constexpr, COUNT_ON_DEVICE: tl.constexpr, HAS_CE: tl.constexpr, STUDENT_GRAD: tl.constexpr,
    TEACHER_GRAD: tl.constexpr,
    HAS_UPSTREAM: tl.constexpr,  # gradients for the upstream gradient at g_ptr, else for 1
    BLOCK_V: tl.constexpr,
    ALTERNATE: tl.constexpr,  # each pass after the first streams the row the other way (see _block_start)
    S_ALIGN: tl.constexpr,  # the largest powers of two up to 16 dividing the row strides and V: passed as
    T_ALIGN: tl.constexpr,  # counts of these units, strides and V are known multiples of them, so rows
    V_ALIGN: tl.constexpr,  # whose length is not a multiple of 16 (V = 1000) still get vector accesses
):  # fmt: skip
    # One program per row: statistics, (JSD) KL to the mixture, loss and gradients, in one launch.
    row = tl.program_id(0).to(tl.int64)
    V = v_units * V_ALIGN
    s_row = s_ptr + row * (s_row_units * S_ALIGN)
    t_row = t_ptr + row * (t_row_units * T_ALIGN)
    weight, label = _row_weight(
        labels_ptr, counted_ptr, rows_counted, row, V, ignore_index, HAS_LABELS, COUNT_ON_DEVICE
    )
    m_s, z_s, m_t, z_t, z_1, kl_num = _slice_stats(s_row, t_row, 0, V, V, inv_temperature, DIRECTION, HAS_CE, BLOCK_V)
    log_z_s = tl.log(z_s)
    log_z_t = tl.log(z_t)
    kl_t_mix = 0.0
    kl_s_mix = 0.0
    if DIRECTION == 2:
        kl_t_mix, kl_s_mix = _slice_mixture_kl(s_row, t_row, 0, V, V, m_s, log_z_s, m_t, log_z_t, inv_temperature,
                                               log_beta, log_one_minus_beta, ALTERNATE, BLOCK_V)  # fmt: skip
        divergence = beta * kl_t_mix + (1.0 - beta) * kl_s_mix
    else:
        divergence = _kl_divergence(kl_num, z_s, z_t, inv_temperature, DIRECTION)
    log_z_1 = tl.log(z_1)
    _store_row_loss(s_row, loss_ptr, row, V, divergence, kd_scale, ce_weight, m_s, log_z_1, label, weight, HAS_CE)
    if STUDENT_GRAD or TEACHER_GRAD:
        _slice_gradients(s_row, t_row, ds_ptr + row * V, dt_ptr + row * V, 0, V, V, m_s, log_z_s, m_t, log_z_t,
                         log_z_1, divergence, kl_t_mix, kl_s_mix,
                         _times_upstream(weight, g_ptr, row, g_stride, HAS_UPSTREAM), label, inv_temperature,
                         kd_scale, ce_weight, beta, log_beta, log_one_minus_beta, DIRECTION, HAS_CE, STUDENT_GRAD,
                         TEACHER_GRAD, ALTERNATE and DIRECTION != 2, BLOCK_V)  # fmt: skip


@triton.jit
def _program_slice(s_ptr, s_row_units, t_ptr, t_row_units, v_units, chunk_blocks, BLOCK_V: tl.constexpr,
                   S_ALIGN: tl.constexpr, T_ALIGN: tl.constexpr, V_ALIGN: tl.constexpr):  # fmt: skip
    # A split-row program (row, k): its row, k, V, its slice [lo, hi) and the row's student and teacher starts.
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    V = v_units * V_ALIGN
    lo = split * chunk_blocks * BLOCK_V
    hi = tl.minimum(lo + chunk_blocks * BLOCK_V, V)
    return row, split, V, lo, hi, s_ptr + row * (s_row_units * S_ALIGN), t_ptr + row * (t_row_units * T_ALIGN)


@triton.jit
def _split_stats_kernel(
    s_ptr, s_row_units,  # [N, V] student logits, last dim contiguous; row stride in S_ALIGN units (as above)
    t_ptr, t_row_units,  # [N, V] teacher logits, likewise; row stride in T_ALIGN units
    stats_ptr,  # [N, splits, STATS] fp32 partial statistics, output
    v_units,
    chunk_blocks,  # BLOCK_V-wide blocks per slice (slices start at multiples of BLOCK_V: aligned)
    splits,  # slices per row
    inv_temperature,
    DIRECTION: tl.constexpr, HAS_CE: tl.constexpr,
    BLOCK_V: tl.constexpr, S_ALIGN: tl.constexpr, T_ALIGN: tl.constexpr, V_ALIGN: tl.constexpr,
):  # fmt: skip
    # Program (row, k): the statistics of slice k of the row (a first pass, always in order).
    row, split, V, lo, hi, s_row, t_row = _program_slice(s_ptr, s_row_units, t_ptr, t_row_units, v_units, chunk_blocks,
                                                         BLOCK_V, S_ALIGN, T_ALIGN, V_ALIGN)  # fmt: skip
    m_s, z_s, m_t, z_t, z_1, kl_num = _slice_stats(s_row, t_row, lo, hi, V, inv_temperature, DIRECTION, HAS_CE, BLOCK_V)
    out = stats_ptr + (row * splits + split) * 8
    tl.store(out + 0, m_s)
    tl.store(out + 1, z_s)
    tl.store(out + 2, m_t)
    tl.store(out + 3, z_t)
    tl.store(out + 4, z_1)
    tl.store(out + 5, kl_num)


@triton.jit
def _combine_stats(stats_row, splits, scale, DIRECTION: tl.constexpr, MAX_SPLITS: tl.constexpr):
    # A row's statistics from its slices' (see _slice_stats): maxima are the largest; each slice's sums are
    # rescaled from its own maxima to the row's, and its KL numerator shifted by how far they differ.
    k = tl.arange(0, MAX_SPLITS)
    valid = k < splits
    m_s_k = tl.load(stats_row + k * 8 + 0, mask=valid, other=float("-inf"))
    z_s_k = tl.load(stats_row + k * 8 + 1, mask=valid, other=0.0)
    m_t_k = tl.load(stats_row + k * 8 + 2, mask=valid, other=float("-inf"))
    z_t_k = tl.load(stats_row + k * 8 + 3, mask=valid, other=0.0)
    z_1_k = tl.load(stats_row + k * 8 + 4, mask=valid, other=0.0)
    kl_k = tl.load(stats_row + k * 8 + 5, mask=valid, other=0.0)
    m_s = tl.max(m_s_k, axis=0)
    m_t = tl.max(m_t_k, axis=0)
    m_s_safe = tl.where(m_s == float("-inf"), 0.0, m_s)
    m_t_safe = tl.where(m_t == float("-inf"), 0.0, m_t)
    m_s_k_safe = tl.where(m_s_k == float("-inf"), 0.0, m_s_k)
    m_t_k_safe = tl.where(m_t_k == float("-inf"), 0.0, m_t_k)
    # A slice that saw nothing finite has zero sums; its factor is 0, not exp(-inf - -inf).
    a_s = tl.where(z_s_k == 0.0, 0.0, tl.exp((m_s_k_safe - m_s_safe) * scale))
    a_t = tl.where(z_t_k == 0.0, 0.0, tl.exp((m_t_k_safe - m_t_safe) * scale))
    z_s = tl.sum(z_s_k * a_s, axis=0)
    z_t = tl.sum(z_t_k * a_t, axis=0)
    z_1 = tl.sum(tl.where(z_1_k == 0.0, 0.0, z_1_k * tl.exp(m_s_k_safe - m_s_safe)), axis=0)
    shift = (m_t_k_safe - m_t_safe) - (m_s_k_safe - m_s_safe)
    kl_num = 0.0
    if DIRECTION == 0:
        kl_num = tl.sum(tl.where(z_t_k == 0.0, 0.0, a_t * (kl_k + z_t_k * shift)), axis=0)
    if DIRECTION == 1:
        kl_num = tl.sum(tl.where(z_s_k == 0.0, 0.0, a_s * (kl_k - z_s_k * shift)), axis=0)
    return m_s, z_s, m_t, z_t, z_1, kl_num


@triton.jit
def _split_mixture_kernel(
    s_ptr, s_row_units, t_ptr, t_row_units,  # student and teacher logits (as _split_stats_kernel)
    stats_ptr,  # [N, splits, STATS] fp32 partial statistics (from _split_stats_kernel)
    mixture_ptr,  # [N, splits, 2] fp32 partial KL(p_t || M), KL(p_s || M), output
    v_units, chunk_blocks, splits, inv_temperature, log_beta, log_one_minus_beta,
    MAX_SPLITS: tl.constexpr,  # a power of two, at least splits
    BLOCK_V: tl.constexpr, ALTERNATE: tl.constexpr, S_ALIGN: tl.constexpr, T_ALIGN: tl.constexpr,
    V_ALIGN: tl.constexpr,
):  # fmt: skip
    # JSD only. Program (row, k): slice k's part of the KL of each distribution to the mixture.
    row, split, V, lo, hi, s_row, t_row = _program_slice(s_ptr, s_row_units, t_ptr, t_row_units, v_units, chunk_blocks,
                                                         BLOCK_V, S_ALIGN, T_ALIGN, V_ALIGN)  # fmt: skip
    m_s, z_s, m_t, z_t, _, _ = _combine_stats(stats_ptr + row * splits * 8, splits, inv_temperature, 2, MAX_SPLITS)
    kl_t_mix, kl_s_mix = _slice_mixture_kl(s_row, t_row, lo, hi, V, m_s, tl.log(z_s), m_t, tl.log(z_t),
                                           inv_temperature, log_beta, log_one_minus_beta, ALTERNATE,
                                           BLOCK_V)  # fmt: skip
    out = mixture_ptr + (row * splits + split) * 2
    tl.store(out + 0, kl_t_mix)
    tl.store(out + 1, kl_s_mix)


@triton.jit(do_not_specialize=["rows_counted"])
def _split_loss_grad_kernel(
    s_ptr, s_row_units, t_ptr, t_row_units,  # student and teacher logits (as _split_stats_kernel)
    labels_ptr,  # [N] integer labels (read when HAS_LABELS)
    counted_ptr,  # [] int64: labelled rows (batchmean's count, read when COUNT_ON_DEVICE)
    rows_counted,  # the rows' weight is 1 / rows_counted unless COUNT_ON_DEVICE
    g_ptr, g_stride,  # [N] upstream gradient of the row losses (stride 0: one value), read when HAS_UPSTREAM
    stats_ptr,  # [N, splits, STATS] fp32 partial statistics (from _split_stats_kernel)
    mixture_ptr,  # [N, splits, 2] fp32 partial KLs to the mixture (JSD, from _split_mixture_kernel)
    loss_ptr,  # [N] fp32 per-row loss times the row's weight, output (by each row's program 0)
    ds_ptr,  # [N, V] student gradient, output, contiguous (written when STUDENT_GRAD)
    dt_ptr,  # [N, V] teacher gradient, output, contiguous (written when TEACHER_GRAD)
    v_units, chunk_blocks, splits,
    inv_temperature, kd_scale, ce_weight, beta, log_beta, log_one_minus_beta, ignore_index,
    MAX_SPLITS: tl.constexpr, DIRECTION: tl.constexpr, HAS_LABELS: tl.constexpr, COUNT_ON_DEVICE: tl.constexpr,
    HAS_CE: tl.constexpr,
    STUDENT_GRAD: tl.constexpr, TEACHER_GRAD: tl.constexpr, HAS_UPSTREAM: tl.constexpr,
    BLOCK_V: tl.constexpr, ALTERNATE: tl.constexpr, S_ALIGN: tl.constexpr, T_ALIGN: tl.constexpr,
    V_ALIGN: tl.constexpr,
):  # fmt: skip
    # Program (row, k): the row's statistics merged, its loss (k = 0), and slice k's gradients.
    row, split, V, lo, hi, s_row, t_row = _program_slice(s_ptr, s_row_units, t_ptr, t_row_units, v_units, chunk_blocks,
                                                         BLOCK_V, S_ALIGN, T_ALIGN, V_ALIGN)  # fmt: skip
    weight, label = _row_weight(
        labels_ptr, counted_ptr, rows_counted, row, V, ignore_index, HAS_LABELS, COUNT_ON_DEVICE
    )
    m_s, z_s, m_t, z_t, z_1, kl_num = _combine_stats(stats_ptr + row * splits * 8, splits, inv_temperature,
                                                     DIRECTION, MAX_SPLITS)  # fmt: skip
    kl_t_mix = 0.0
    kl_s_mix = 0.0
    if DIRECTION == 2:
        k = tl.arange(0, MAX_SPLITS)
        parts = mixture_ptr + (row * splits + k) * 2
        kl_t_mix = tl.sum(tl.load(parts + 0, mask=k < splits, other=0.0), axis=0)
        kl_s_mix = tl.sum(tl.load(parts + 1, mask=k < splits, other=0.0), axis=0)
        divergence = beta * kl_t_mix + (1.0 - beta) * kl_s_mix
    else:
        divergence = _kl_divergence(kl_num, z_s, z_t, inv_temperature, DIRECTION)
    log_z_1 = tl.log(z_1)
    if split == 0:
        _store_row_loss(s_row, loss_ptr, row, V, divergence, kd_scale, ce_weight, m_s, log_z_1, label, weight,
                        HAS_CE)  # fmt: skip
    if STUDENT_GRAD or TEACHER_GRAD:
        _slice_gradients(s_row, t_row, ds_ptr + row * V, dt_ptr + row * V, lo, hi, V, m_s, tl.log(z_s), m_t,
                         tl.log(z_t), log_z_1, divergence, kl_t_mix, kl_s_mix,
                         _times_upstream(weight, g_ptr, row, g_stride, HAS_UPSTREAM), label, inv_temperature,
                         kd_scale, ce_weight, beta, log_beta, log_one_minus_beta, DIRECTION, HAS_CE,
                         STUDENT_GRAD, TEACHER_GRAD, ALTERNATE and DIRECTION != 2, BLOCK_V)  # fmt: skip


@triton.jit
def _scale_rows_kernel(
    grad_ptr,  # [N, V] gradient buffer, contiguous, scaled in place
    grad_output_ptr,  # [N] (stride g_stride) or scalar (stride 0) upstream gradient
    g_stride,
    v_units,  # V in units of V_ALIGN elements (see _softmax_kl_kernel)
    BLOCK: tl.constexpr,
    V_ALIGN: tl.constexpr,
):
    V = v_units * V_ALIGN
    row = tl.program_id(0).to(tl.int64)
    g = tl.load(grad_output_ptr + row * g_stride).to(tl.float32)
    # The common upstream gradient of 1 leaves the buffer untouched: no traffic, decided on the device.
    if g != 1.0:
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        in_row = cols < V
        ptr = grad_ptr + row * V + cols
        values = tl.load(ptr, mask=in_row).to(tl.float32)
        tl.store(ptr, (values * g).to(grad_ptr.dtype.element_ty), mask=in_row)
