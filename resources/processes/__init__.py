"""What runs other programs: Python scripts over Pipes, SSH commands, and their secret masker."""
