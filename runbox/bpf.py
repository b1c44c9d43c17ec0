"""Classic BPF, assembled: the language of a seccomp filter.

A filter is a little program the kernel runs at every syscall: load a word
of struct seccomp_data, compare it, jump, return a verdict.  Each
instruction is a struct sock_filter of 8 bytes (op, jt, jf, k).  Jumps go
forward only, and a conditional one reaches at most 255 instructions ahead;
assemble() resolves labels and routes farther jumps through an extra one.
See the kernel's Documentation/networking/filter.rst.
"""

from __future__ import annotations

import struct

# Classic BPF, from <linux/bpf_common.h>: only what the filter uses.
BPF_LD, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x04, 0x05, 0x06
BPF_W, BPF_ABS, BPF_K = 0x00, 0x20, 0x00
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_AND = 0x50
BPF_MAXINSNS = 4096



class Label:
    """A place in the program, named by jumps before its position is known."""


def ld(offset: int) -> tuple:
    return (BPF_LD | BPF_W | BPF_ABS, 0, 0, offset)


def and_(k: int) -> tuple:
    return (BPF_ALU | BPF_AND | BPF_K, 0, 0, k)


def ret(k: int) -> tuple:
    return (BPF_RET | BPF_K, 0, 0, k)


def jump(op: int, k: int, jt: Label | int, jf: Label | int) -> tuple:
    """A conditional jump; 0 stands for the next instruction."""
    return (BPF_JMP | op | BPF_K, jt, jf, k)


def assemble(code: list) -> bytes:
    """Instructions and labels to struct sock_filter, jumps resolved.

    A conditional jump reaches at most 255 instructions ahead; a farther
    one goes through an unconditional jump put right after it, and the
    positions are worked out again.
    """
    while True:
        at, position = {}, 0
        for item in code:
            if isinstance(item, Label):
                at[item] = position
            else:
                position += 1
        out: list[bytes] = []
        for i, item in enumerate(code):
            if isinstance(item, Label):
                continue
            op, jt, jf, k = item
            here = len(out)
            if op == BPF_JMP | BPF_JA:
                k = at[k] - here - 1
            jt, jf = (at[t] - here - 1 if isinstance(t, Label) else t
                      for t in (jt, jf))
            if jt > 255 or jf > 255:
                code = code[:i] + _trampoline(item, at, here) + code[i + 1:]
                break
            out.append(struct.pack("=HBBI", op, jt, jf, k))
        else:
            return b"".join(out)


def _trampoline(item: tuple, at: dict, here: int) -> list:
    """item again, its far targets reached through jumps right after it."""
    op, jt, jf, k = item
    after, stubs = Label(), []

    def near(target: Label | int) -> Label:
        if not isinstance(target, Label):
            return after
        if at[target] - here - 1 <= 255:
            return target
        stub = Label()
        stubs.extend([stub, (BPF_JMP | BPF_JA, 0, 0, target)])
        return stub

    return [(op, near(jt), near(jf), k), *stubs, after]
