"""Train an image classifier with the one-cycle policy.

accelerate launch train.py --config configs/fashion_mnist.yaml trainer.epochs=3
"""

import sys

from superconverge.cli import main

if __name__ == "__main__":
    sys.exit(main())
