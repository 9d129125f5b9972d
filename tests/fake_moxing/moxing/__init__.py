"""A stand-in for ModelArts' moxing package in tests: OBS paths are local folders."""
import shutil


class file:  # noqa: N801 (moxing's own name)
    @staticmethod
    def copy_parallel(src: str, dst: str) -> None:
        shutil.copytree(src, dst, dirs_exist_ok=True)
