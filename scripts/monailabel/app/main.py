"""A minimal MONAI Label app that serves one local, exported s3d-monai bundle for inference (no training).

Nothing is downloaded: the bundle is read from the folder given with ``--conf bundle <folder>`` (an exported
bundle, or one extracted by ``monai.bundle download``). The model is named after the bundle folder, so the REST
endpoint is ``/infer/<folder name>``.

Request parameters: MONAI Label's ``BundleInferTask`` lists the bundle's ``displayable_configs`` (of an exported
bundle: ``mirroring``, test-time mirroring, on by default when the server has a GPU and off on a CPU) in
``GET /info/`` and writes each request's values (``params={"mirroring": true}``) into the inference config before
it builds the inferer; nothing in this app is needed for that.

    monailabel start_server --app scripts/monailabel/app --studies <images folder> \
        --conf bundle <bundle folder> --host 127.0.0.1 --port 8000
"""

import logging
import os

from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.infer.bundle import BundleInferTask

logger = logging.getLogger(__name__)


class MyApp(MONAILabelApp):
    """Serves the bundle named by ``conf["bundle"]`` with MONAI Label's ``BundleInferTask``."""

    def __init__(self, app_dir, studies, conf):
        bundle = conf.get("bundle")
        if not bundle or not os.path.isfile(os.path.join(bundle, "configs", "metadata.json")):
            raise ValueError(
                f"--conf bundle must name an exported bundle folder (with configs/metadata.json), got {bundle!r}."
            )
        self.bundle = os.path.abspath(bundle)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="s3d-monai bundle server",
                         description=f"Inference with the bundle in {self.bundle}")

    def init_infers(self):
        name = os.path.basename(self.bundle.rstrip(os.sep))
        task = BundleInferTask(self.bundle, self.conf)
        if not task.is_valid():
            raise ValueError(f"MONAI Label cannot use the bundle in {self.bundle} (see the log above).")
        logger.info("serving bundle %s as model '%s'", self.bundle, name)
        return {name: task}

    def init_strategies(self):
        return {}
