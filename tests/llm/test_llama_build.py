"""The installed llama.cpp build must generate on this CPU without crashing.

A llama-cpp-python wheel built with -march=native on a Sapphire Rapids host segfaulted
in llama_decode (ggml's AMX matmul path) on the first token, which took the whole test
run down with it. Generating in a child process turns such a crash into a clear failure
naming the exit signal, instead of a dead pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import threading
    from llama_cpp import Llama
    from server.llm.llamacpp import bundled_model_path

    llm = Llama(model_path=str(bundled_model_path()), n_ctx=512, verbose=False)
    pieces = []

    def generate():  # a worker thread, as the backend runs it
        messages = [{"role": "user", "content": "What does a header rope in team roping?"}]
        for chunk in llm.create_chat_completion(messages, max_tokens=24, stream=True):
            pieces.append(chunk["choices"][0]["delta"].get("content", ""))

    worker = threading.Thread(target=generate)
    worker.start()
    worker.join()
    print("TEXT:" + "".join(pieces).replace("\\n", " "))
    """
)


def test_bundled_model_generates_in_a_worker_thread() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (
        f"llama.cpp generation exited with {done.returncode} (negative: killed by that "
        f"signal; rebuild with `make clean setup`)\n{done.stderr[-2000:]}"
    )
    text = done.stdout.split("TEXT:", 1)[-1].strip()
    assert len(text.split()) >= 3, done.stdout


def test_ggml_runs_its_own_threads_not_openmp() -> None:
    """torch loads libgomp into the same process. libgomp counts every OpenMP thread, and
    with more than there are CPUs it stops spinning at barriers: ggml's barriers (hundreds
    per token) then slept, and the server decoded at about 60 tokens/s where
    llama-cpp-python alone did 95. scripts/llama_wheel.sh builds with GGML_OPENMP=OFF."""
    import llama_cpp

    libraries = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so*"))
    assert libraries, "llama-cpp-python has no libggml-cpu in its lib folder"
    for library in libraries:
        data = library.read_bytes()
        assert b"libgomp" not in data and b"GOMP_barrier" not in data, (
            f"{library.name} uses OpenMP; rebuild with `make clean setup` "
            "(scripts/llama_wheel.sh turns it off)"
        )
