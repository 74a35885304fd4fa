"""gsgn_fairseq: GSGN speech multi-view feature fusion as a fairseq plugin."""
from setuptools import find_packages, setup

setup(
    name="gsgn_fairseq",
    version="0.1.0",
    description=(
        "Gradient-sensitive gating network (GSGN) fusion of FBank and HuBERT-unit "
        "inputs for end-to-end speech translation, as a fairseq plugin"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gsgn_fairseq", "gsgn_fairseq.*"]),
    python_requires=">=3.11",
    install_requires=[
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "fairseq-fixed==0.12.3.1",  # imports as `fairseq`
        "sentencepiece",
        "sacrebleu",
        "joblib",
        "numpy",
        "scikit-learn",
        "soundfile",
        "tqdm",
        "matplotlib",
        "PyYAML",
        "transformers",  # Hugging Face SSL model directories (gsgn-extract-units --feature ssl)
    ],
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "gsgn-prep-mustc = gsgn_fairseq.prep.prep_mustc:main",
            "gsgn-learn-kmeans = gsgn_fairseq.prep.learn_kmeans:cli",
            "gsgn-extract-units = gsgn_fairseq.prep.extract_units:cli",
            "gsgn-pretrain-hubert = gsgn_fairseq.prep.pretrain_hubert:cli",
            "gsgn-prep-pretrain = gsgn_fairseq.prep.pretrain_data:main",
            "gsgn-average-checkpoints = gsgn_fairseq.cli.average_checkpoints:main",
            "gsgn-score = gsgn_fairseq.cli.score:main",
            "gsgn-translate = gsgn_fairseq.cli.translate:cli",
            "gsgn-measure-unit-range = gsgn_fairseq.cli.measure_unit_range:main",
        ],
    },
)
