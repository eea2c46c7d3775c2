"""Resident memory of a process by mapping (binary, anonymous heap, libraries), from
/proc/PID/smaps: says whether RSS is heap or file pages. Used by scripts/idle-memory.sh."""
import collections
import re
import sys


def main(pid):
    name = None
    by_name = collections.Counter()
    for line in open(f"/proc/{pid}/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split()
            name = parts[5].split("/")[-1] if len(parts) > 5 else "[anon]"
        elif line.startswith("Rss:"):
            by_name[name] += int(line.split()[1])
    for n, kb in by_name.most_common(6):
        print(f"  rss {kb:8d} kB  {n}")


if __name__ == "__main__":
    main(sys.argv[1])
