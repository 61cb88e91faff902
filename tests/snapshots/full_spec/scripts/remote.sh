echo "a stand-in remote script for the snapshot spec"
