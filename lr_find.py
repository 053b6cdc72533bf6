"""Run only the LR range test for a config and print every policy's suggestion.

accelerate launch lr_find.py --config configs/fashion_mnist.yaml
"""

import sys

from superconverge.cli import lr_find_main

if __name__ == "__main__":
    sys.exit(lr_find_main())
