"""The porting guide's legacy PFN-remapping driver (docs/mmap-prepare.md §3): ``remap_pfn_range()`` in
``->mmap``.  The class is the guide's block verbatim (tests/lab/test_portcheck.py checks).
"""

from vmalab.driver import remap_pfn_range
from vmalab.files import FileOperations


class LegacyRemap(FileOperations):
    has_mmap = True
    def mmap(self, file, vma):
        return remap_pfn_range(file.owner, vma, vma.vm_start, 0xFEE00, vma.vm_end - vma.vm_start)
