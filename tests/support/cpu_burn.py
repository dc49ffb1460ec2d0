"""A shell loop that burns CPU until a figure is reached, for tests that assert on CPU time.

A fixed amount of work costs a different amount of CPU on every machine (a
150,000-iteration loop burned 299.5 ms where 300 ms were asserted), so the
tests burn until the shell's own CPU time reaches a figure and then compare
what was measured against that figure.
"""

from __future__ import annotations

#: Clock ticks per second in /proc/<pid>/stat (USER_HZ: 100 on every Linux ABI).
TICK_NS = 10_000_000


def burn_own_cpu(ticks: int) -> str:
    """Return sh that busy-loops until its own utime + stime reach ``ticks`` clock ticks.

    Fields 14 and 15 of /proc/$$/stat are the shell's user and system time
    in ticks; the inner loop is short so the check runs often. The file is
    read with the shell's own ``read``: a ``cat`` per check would fork
    hundreds of processes, whose kernel memory the cgroup is charged and
    then refunded for a while after, so memory figures would not settle.
    """
    return (
        "while :; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done;"
        " read -r stat < /proc/$$/stat; set -- $stat;"
        f" [ $((${{14}} + ${{15}})) -ge {ticks} ] && break; done"
    )
