"""Peak memory of a call, for the metrics' memory promises."""

import tracemalloc


def peak_bytes(fn) -> int:
    """Peak traced allocation while running ``fn`` (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
