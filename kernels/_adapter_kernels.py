"""Triton kernels and launchers of adapted_feature_match (the op, its reference and dispatcher are in
adapted_feature_match.py).

y = W s + b per position is recomputed in registers by both kernels and never written to device memory:
- the positions kernel holds one student tile [Cs, BLOCK_P] and walks the teacher channels in blocks,
  computing y, the loss, dy and the student gradient ds = W^T dy (and dt = -dy) on the fly;
- the weight kernel recomputes y and dy over a chunk of positions for one block of teacher channels and
  accumulates dW = dy s^T and db = sum(dy) in fp32, one partial per chunk, summed in torch afterwards
  (deterministic, no atomics).
"""

import torch
from torch import Tensor

from ._dispatch import TRITON_INTERPRET, tl, triton
from ._features import nan_sign

_KIND_CODE = {"mse": 0, "l1": 1}
# Widest student the fused kernels hold in one tile; wider adapters run the reference. fp32 products (float32
# or mixed-dtype inputs) need more shared memory than fp16/bf16 ones: 99 KiB at 512 channels on
# sm_90 and sm_80 builds, and more than an A100 has at 1024; at most 97 KiB for bf16 at 1024.
MAX_STUDENT_CHANNELS = 1024
MAX_STUDENT_CHANNELS_FP32 = 512
# IEEE fp32 products (TF32 disabled) run on the CUDA cores, whose dot operands take many more registers: 256.
MAX_STUDENT_CHANNELS_IEEE = 256
# Block sizes: BLOCK_CT x BLOCK_CS weight blocks of at most WEIGHT_BLOCK_ELEMENTS and BLOCK_CS x BLOCK_P student
# tiles of at most TILE_ELEMENTS, each dim >= 16 (tl.dot's minimum); IEEE fp32 products take tiles IEEE_SHRINK
# times smaller and 4 warps up to 128 student channels. Both kernels are built with ptxas's register cap at
# 255 where its own heuristics stopped at 64 or 128 registers and spilled (the weight kernel; the positions
# kernel with fp32 products, IEEE or TF32). Chosen from the compile gate's sm_90 and sm_80 builds with Triton
# 3.6 and 3.8: no variant spills and none needs more than 99 KiB of shared memory
# (benchmarks/results/compile_report.csv; re-measure with python -m benchmarks.compile_gate --ops
# adapted_feature_match).
WEIGHT_BLOCK_ELEMENTS = 4096
TILE_ELEMENTS = 8192
MAX_BLOCK_P = 64
MAX_BLOCK_CT = 32
IEEE_SHRINK = 4
# TF32 products (fp32 operands, twice the registers of 16-bit ones) take student tiles TF32_SHRINK times smaller,
# and ptxas's cap of 255 in both kernels: at 128 student channels, Triton 3.6's builds (torch 2.11's) spilled
# 32 bytes in the weight kernel on sm_90 and 48 in the positions kernel on sm_80 with the full tile.
TF32_SHRINK = 2
MAX_REGISTERS = 255
# Hopper's wgmma takes tiles of at least 64 rows (mma.sync, sm_80's, 16): on sm_90 and later, tensor-core
# products get BLOCK_CT = 64 where the student has at most WGMMA_MAX_STUDENT_CHANNELS channels, so y = W s
# runs on wgmma too (dW^T = s dy^T and ds = W^T dy have BLOCK_CS rows, 64 and more from 64 channels). Wider
# students keep the smaller blocks: with 64 at 512 channels and more, the gate's builds spilled or needed more
# shared memory than sm_90 has (benchmarks/NOTES.md).
WGMMA_ROWS = 64
WGMMA_MAX_STUDENT_CHANNELS = 128
# Weight-kernel programs per CPU run (on CUDA: 2 per SM); each sums the positions of one chunk.
CPU_WEIGHT_PROGRAMS = 4


@triton.jit
def _loss_and_slope(diff, KIND: tl.constexpr):
    # Per-element loss and its derivative in y (NaN stays NaN).
    if KIND == 0:
        loss = diff * diff
        slope = 2.0 * diff
    else:
        loss = tl.abs(diff)
        slope = nan_sign(diff)
    return loss, slope


@triton.jit
def _output_gradient(slope, grad_scale, g_sample_ptr, g_sc, g_sp, ct, positions, tile, HAS_UPSTREAM: tl.constexpr):
    # dy, the gradient of the loss in y on a [BLOCK_CT, BLOCK_P] tile: the loss's slope times grad_scale and the
    # upstream gradient (read from one sample's [Ct, P] map). Padded channels and positions, where y = b but
    # t = 0, get 0: they must not reach a gradient.
    dy = slope * grad_scale
    if HAS_UPSTREAM:
        g_offsets = ct[:, None] * g_sc + positions[None, :] * g_sp
        dy *= tl.load(g_sample_ptr + g_offsets, mask=tile, other=0.0).to(tl.float32)
    return tl.where(tile, dy, 0.0)


@triton.jit
def _dot(a, b, LOW_PRECISION_DOT: tl.constexpr, PRECISION: tl.constexpr):
    # fp16/bf16 operands straight to the tensor cores (fp32 accumulation); otherwise fp32 operands with
    # TF32 or IEEE products. The interpreter has no bf16 arithmetic: it always takes the fp32 branch.
    if LOW_PRECISION_DOT:
        product = tl.dot(a, b)
    else:
        product = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PRECISION)
    return product


@triton.jit
def adapted_positions_kernel(
    s_ptr, s_sn, s_sc, s_sp,  # [N, Cs, P] student and its strides; its gradient ds_ptr has the same strides
    t_ptr, t_sn, t_sc, t_sp,  # [N, Ct, P] teacher; dt_ptr and e_ptr have the same strides
    w_ptr, w_so, w_si,  # [Ct, Cs] adapter weight
    b_ptr,  # [Ct] adapter bias (HAS_BIAS)
    g_ptr, g_sn, g_sc, g_sp,  # [N, Ct, P] upstream gradient of e (HAS_UPSTREAM)
    e_ptr,  # [N, Ct, P] fp32 per-element loss, output (WRITE_E)
    partial_ptr,  # [programs] fp32 partial loss sums times grad_scale, output (WRITE_PARTIAL): the loss is their sum
    ds_ptr,  # [N, Cs, P] student gradient, output (STUDENT_GRAD)
    dt_ptr,  # [N, Ct, P] teacher gradient, output (TEACHER_GRAD)
    Cs, Ct, P,
    grad_scale,  # 1 / (N Ct P) for mean, 1 otherwise
    KIND: tl.constexpr,  # 0 mse, 1 l1
    HAS_BIAS: tl.constexpr, HAS_UPSTREAM: tl.constexpr,
    WRITE_E: tl.constexpr, WRITE_PARTIAL: tl.constexpr, STUDENT_GRAD: tl.constexpr, TEACHER_GRAD: tl.constexpr,
    LOW_PRECISION_DOT: tl.constexpr, PRECISION: tl.constexpr,  # PRECISION: "tf32" or "ieee" for fp32 operands
    BLOCK_CS: tl.constexpr, BLOCK_CT: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    # One program: BLOCK_P positions of one sample, all channels.
    tile_index = tl.program_id(0).to(tl.int64)
    p_blocks = tl.cdiv(P, BLOCK_P)
    n = tile_index // p_blocks
    positions = (tile_index % p_blocks) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    in_p = positions < P
    cs = tl.arange(0, BLOCK_CS).to(tl.int64)
    in_cs = cs < Cs
    s_offsets = n * s_sn + cs[:, None] * s_sc + positions[None, :] * s_sp
    s = tl.load(s_ptr + s_offsets, mask=in_cs[:, None] & in_p[None, :], other=0.0)
    ds_acc = tl.zeros([BLOCK_CS, BLOCK_P], dtype=tl.float32)
    loss_acc = tl.zeros([BLOCK_P], dtype=tl.float32)
    for ct0 in range(0, Ct, BLOCK_CT):
        ct = ct0 + tl.arange(0, BLOCK_CT).to(tl.int64)
        in_ct = ct < Ct
        w = tl.load(w_ptr + ct[:, None] * w_so + cs[None, :] * w_si, mask=in_ct[:, None] & in_cs[None, :], other=0.0)
        y = _dot(w, s, LOW_PRECISION_DOT, PRECISION)
        if HAS_BIAS:
            y += tl.load(b_ptr + ct, mask=in_ct, other=0.0).to(tl.float32)[:, None]
        tile = in_ct[:, None] & in_p[None, :]
        t_offsets = n * t_sn + ct[:, None] * t_sc + positions[None, :] * t_sp
        diff = y - tl.load(t_ptr + t_offsets, mask=tile, other=0.0).to(tl.float32)
        loss, slope = _loss_and_slope(diff, KIND)
        if WRITE_E:
            tl.store(e_ptr + t_offsets, loss, mask=tile)
        if WRITE_PARTIAL:
            loss_acc += tl.sum(tl.where(tile, loss, 0.0), axis=0)
        if STUDENT_GRAD or TEACHER_GRAD:
            dy = _output_gradient(slope, grad_scale, g_ptr + n * g_sn, g_sc, g_sp, ct, positions, tile, HAS_UPSTREAM)
            if TEACHER_GRAD:
                tl.store(dt_ptr + t_offsets, (-dy).to(dt_ptr.dtype.element_ty), mask=tile)
            if STUDENT_GRAD:
                # ds = W^T dy: with fp16/bf16 operands dy is rounded to their dtype, as a half-precision
                # conv backward rounds its incoming gradient; the products accumulate in fp32.
                ds_acc += _dot(tl.trans(w), dy.to(w.dtype) if LOW_PRECISION_DOT else dy, LOW_PRECISION_DOT, PRECISION)
    if WRITE_PARTIAL:
        tl.store(partial_ptr + tl.program_id(0), tl.sum(loss_acc, axis=0) * grad_scale)
    if STUDENT_GRAD:
        tl.store(ds_ptr + s_offsets, ds_acc.to(ds_ptr.dtype.element_ty), mask=in_cs[:, None] & in_p[None, :])


@triton.jit
def adapted_weight_kernel(
    s_ptr, s_sn, s_sc, s_sp,  # [N, Cs, P] student and its strides
    t_ptr, t_sn, t_sc, t_sp,  # [N, Ct, P] teacher
    w_ptr, w_so, w_si,  # [Ct, Cs] adapter weight
    b_ptr,  # [Ct] adapter bias (HAS_BIAS)
    g_ptr, g_sn, g_sc, g_sp,  # [N, Ct, P] upstream gradient of e (HAS_UPSTREAM)
    dw_ptr,  # [chunks, Ct, Cs] fp32 partial weight gradients, contiguous, output (WEIGHT_GRAD)
    db_ptr,  # [chunks, Ct] fp32 partial bias gradients, contiguous, output (BIAS_GRAD)
    Cs, Ct, P,
    n_tiles,  # N * cdiv(P, BLOCK_P) position tiles, split into chunks of tiles_per_chunk
    tiles_per_chunk,
    grad_scale,
    KIND: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_UPSTREAM: tl.constexpr,
    WEIGHT_GRAD: tl.constexpr, BIAS_GRAD: tl.constexpr,
    LOW_PRECISION_DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_CS: tl.constexpr, BLOCK_CT: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    # One program: one block of teacher channels over one chunk of position tiles. Programs of the same
    # chunk are adjacent in launch order, so the student tiles they all read are served from L2.
    ct = tl.program_id(0) * BLOCK_CT + tl.arange(0, BLOCK_CT).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    in_ct = ct < Ct
    cs = tl.arange(0, BLOCK_CS).to(tl.int64)
    in_cs = cs < Cs
    w_block = in_ct[:, None] & in_cs[None, :]
    w = tl.load(w_ptr + ct[:, None] * w_so + cs[None, :] * w_si, mask=w_block, other=0.0)
    bias = tl.zeros([BLOCK_CT], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + ct, mask=in_ct, other=0.0).to(tl.float32)
    # dW accumulates transposed, dW^T = s dy^T [BLOCK_CS, BLOCK_CT]: its row count is the student's channel
    # block (64 and more from 64 channels), which Hopper's wgmma needs; BLOCK_CT rows would stay on mma.sync.
    dwt_acc = tl.zeros([BLOCK_CS, BLOCK_CT], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_CT], dtype=tl.float32)
    p_blocks = tl.cdiv(P, BLOCK_P)
    for step in range(0, tiles_per_chunk):
        tile_index = chunk * tiles_per_chunk + step
        n = tile_index // p_blocks
        positions = (tile_index % p_blocks) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
        in_p = (positions < P) & (tile_index < n_tiles)
        s = tl.load(s_ptr + n * s_sn + cs[:, None] * s_sc + positions[None, :] * s_sp,
                    mask=in_cs[:, None] & in_p[None, :], other=0.0)  # fmt: skip
        tile = in_ct[:, None] & in_p[None, :]
        t = tl.load(t_ptr + n * t_sn + ct[:, None] * t_sc + positions[None, :] * t_sp, mask=tile, other=0.0)
        diff = _dot(w, s, LOW_PRECISION_DOT, PRECISION) + bias[:, None] - t.to(tl.float32)
        _, slope = _loss_and_slope(diff, KIND)
        dy = _output_gradient(slope, grad_scale, g_ptr + n * g_sn, g_sc, g_sp, ct, positions, tile, HAS_UPSTREAM)
        if WEIGHT_GRAD:
            dwt_acc += _dot(s, tl.trans(dy.to(s.dtype) if LOW_PRECISION_DOT else dy), LOW_PRECISION_DOT, PRECISION)
        if BIAS_GRAD:
            db_acc += tl.sum(dy, axis=1)
    if WEIGHT_GRAD:
        tl.store(dw_ptr + chunk * Ct * Cs + ct[None, :] * Cs + cs[:, None], dwt_acc, mask=tl.trans(w_block))
    if BIAS_GRAD:
        tl.store(db_ptr + chunk * Ct + ct, db_acc, mask=in_ct)


def _dot_precision() -> str:
    # fp32 operands use TF32 tensor cores when cuDNN may (torch's default, what an eager 1x1 conv uses), else IEEE.
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def low_precision_products(student_dtype: torch.dtype, weight_dtype: torch.dtype) -> bool:
    """fp16/bf16 student and weight of one dtype go to tl.dot as they are; everything else in fp32."""
    return student_dtype == weight_dtype and student_dtype in (torch.float16, torch.bfloat16)


def max_student_channels(student_dtype: torch.dtype, weight_dtype: torch.dtype) -> int:
    if low_precision_products(student_dtype, weight_dtype):
        return MAX_STUDENT_CHANNELS
    return MAX_STUDENT_CHANNELS_FP32 if _dot_precision() == "tf32" else MAX_STUDENT_CHANNELS_IEEE


def _capability_major(device: torch.device) -> int:
    """The major CUDA compute capability of `device` (9 on an H100), 0 off CUDA."""
    return torch.cuda.get_device_capability(device)[0] if device.type == "cuda" else 0


def _min_tensor_core_rows(device: torch.device) -> int:
    """The fewest rows a tensor-core product tile of this device takes: WGMMA_ROWS from sm_90, else 16."""
    return WGMMA_ROWS if _capability_major(device) >= 9 else 16


def launch_config(student: Tensor, weight: Tensor, bias: Tensor | None, upstream: Tensor | None, kind: str) -> dict:
    """Block sizes, warps and the constexpr options shared by both kernels (student [N, Cs, P])."""
    block_cs = max(16, triton.next_power_of_2(student.shape[1]))
    low_precision = low_precision_products(student.dtype, weight.dtype)
    precision = _dot_precision()
    shrink = IEEE_SHRINK if precision == "ieee" and not low_precision else 1
    block_ct = max(16, min(MAX_BLOCK_CT, WEIGHT_BLOCK_ELEMENTS // shrink // block_cs))
    tile_shrink = shrink if shrink > 1 else 1 if low_precision else TF32_SHRINK
    if shrink == 1 and block_cs <= WGMMA_MAX_STUDENT_CHANNELS:  # tensor-core products
        block_ct = max(block_ct, _min_tensor_core_rows(student.device))
    return dict(
        KIND=_KIND_CODE[kind], HAS_BIAS=bias is not None, HAS_UPSTREAM=upstream is not None,
        LOW_PRECISION_DOT=low_precision and not TRITON_INTERPRET, PRECISION=precision, BLOCK_CS=block_cs,
        BLOCK_CT=block_ct,
        BLOCK_P=max(16, min(MAX_BLOCK_P, TILE_ELEMENTS // tile_shrink // block_cs)),
        num_warps=4 if block_cs <= (128 if shrink > 1 else 32) else 8,
        **({} if low_precision else {"maxnreg": MAX_REGISTERS}),
    )  # fmt: skip


def _input_args(student, teacher, weight, bias, upstream) -> tuple:
    # Pointers and strides up to the upstream gradient; absent tensors are replaced by a pointer never read.
    upstream_or_teacher = teacher if upstream is None else upstream
    return (student, *student.stride(), teacher, *teacher.stride(), weight, *weight.stride(),
            weight if bias is None else bias, upstream_or_teacher, *upstream_or_teacher.stride())  # fmt: skip


def position_tiles(student: Tensor, config: dict) -> int:
    """Programs of the positions kernel: one per BLOCK_P positions of one sample."""
    return student.shape[0] * triton.cdiv(student.shape[2], config["BLOCK_P"])


def positions_pass(student, teacher, weight, bias, upstream, e, partials, grad_s, grad_t, grad_scale, config) -> None:
    """Launch the positions kernel; e, partials, grad_s, grad_t are written when they are not empty."""
    adapted_positions_kernel[(position_tiles(student, config),)](
        *_input_args(student, teacher, weight, bias, upstream), e, partials, grad_s, grad_t, student.shape[1],
        teacher.shape[1], student.shape[2], grad_scale, WRITE_E=e.numel() > 0, WRITE_PARTIAL=partials.numel() > 0,
        STUDENT_GRAD=grad_s.numel() > 0, TEACHER_GRAD=grad_t.numel() > 0, **config,
    )  # fmt: skip


def _weight_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return CPU_WEIGHT_PROGRAMS


def weight_pass(student, teacher, weight, bias, upstream, grad_scale, weight_grad, bias_grad, config) -> tuple:
    """fp32 dW [Ct, Cs] and db [Ct] (each [0] when unwanted) from per-chunk partials of the weight kernel."""
    if not (weight_grad or bias_grad):
        return student.new_empty(0, dtype=torch.float32), student.new_empty(0, dtype=torch.float32)
    n_student, n_teacher = student.shape[1], teacher.shape[1]
    n_tiles = position_tiles(student, config)
    ct_blocks = triton.cdiv(n_teacher, config["BLOCK_CT"])
    # Enough chunks to fill the device with ct_blocks x chunks programs, each summing a run of tiles.
    tiles_per_chunk = triton.cdiv(n_tiles, max(1, min(n_tiles, _weight_programs(student.device) // ct_blocks)))
    chunks = triton.cdiv(n_tiles, tiles_per_chunk)
    dw = student.new_empty((chunks, n_teacher, n_student) if weight_grad else 0, dtype=torch.float32)
    db = student.new_empty((chunks, n_teacher) if bias_grad else 0, dtype=torch.float32)
    adapted_weight_kernel[(ct_blocks, chunks)](
        *_input_args(student, teacher, weight, bias, upstream), dw, db, n_student, n_teacher, student.shape[2],
        n_tiles, tiles_per_chunk, grad_scale, WEIGHT_GRAD=weight_grad, BIAS_GRAD=bias_grad,
        **(config | {"maxnreg": MAX_REGISTERS}),
    )  # fmt: skip
    return (dw.sum(0) if weight_grad else dw), (db.sum(0) if bias_grad else db)
