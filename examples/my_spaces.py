"""A search space written by a user, outside the toolkit (see README, "Your own search space")."""

from search_spaces import Arch, Block, Decision, Head, SearchSpace, Stem


class TinySpace(SearchSpace):
    """Three stages at 32 px: block type, kernel, expansion and width are searched."""

    name = "tiny"

    def __init__(self, resolution: int = 32, num_classes: int = 10):
        self.resolution, self.num_classes = resolution, num_classes

    def config(self):
        return {"resolution": self.resolution, "num_classes": self.num_classes}

    def decisions(self):
        return [
            Decision("s1.kernel", (3, 5)),
            Decision("s2.block", ("mbconv", "fused_mbconv")),
            Decision("s2.expansion", (2, 4, 6)),
            Decision("s3.filters", (24, 32)),
            Decision("s3.se", (0, 0.25)),
        ]

    def make_arch(self, c):
        return Arch(
            stem=Stem(8), head=Head(128, dropout=0.1), resolution=self.resolution,
            num_classes=self.num_classes,
            stages=(
                Block("ds", 8, kernel=c["s1.kernel"]),
                Block(c["s2.block"], 16, stride=2, expansion=c["s2.expansion"], repeats=2),
                Block("mbconv", c["s3.filters"], stride=2, expansion=4, se_ratio=c["s3.se"]),
            ),
        )
