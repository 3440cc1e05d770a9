"""The porting guide's port of ``port_remap_legacy.py`` (docs/mmap-prepare.md §3): the remap requested as
an action.  It needs actions (6.19+): on 6.18 ``vmalab port-check`` reports that it cannot run.  The class is
the guide's block verbatim (tests/lab/test_portcheck.py checks).
"""

from vmalab.driver import mmap_action_remap_full
from vmalab.files import FileOperations


class PreparedRemap(FileOperations):
    has_mmap_prepare = True
    def mmap_prepare(self, desc):
        mmap_action_remap_full(desc, 0xFEE00)
        return 0
