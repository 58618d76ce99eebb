# The virtual board's filesystem as the REPL sees it, mounted by the power-on once the firmware
# has left (machine.Fs, loaded through machine.__getattr__): the unix port lists a directory as
# (name, type, inode); a board's filesystem adds the size, which `mpremote fs ls` shows (0 for
# every file without it). Directories list size 0, as littlefs gives.
import os


class Fs(os.VfsPosix):
    def ilistdir(self, path):
        d = path if path[-1:] == "/" else path + "/" if path else ""
        for e in super().ilistdir(path):
            yield (e[0], e[1], e[2], 0 if e[1] == 0x4000 else self.stat(d + e[0])[6])
