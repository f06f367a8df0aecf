"""Rule prepare_data: load a dataset by name and save its fixed train/val/test split."""
from prunelab.data import prepare_dataset, save_prepared
from prunelab.jobs import end_process, start_script

start_script(snakemake)
cfg = snakemake.params.dataset
data = prepare_dataset(cfg["name"], cfg["data_root"], download=cfg["download"], val_fraction=cfg["val_fraction"],
                       split_seed=cfg["split_seed"], image_size=cfg["image_size"], max_train=cfg["max_train"],
                       max_test=cfg["max_test"])
save_prepared(data, snakemake.output[0])
end_process()
