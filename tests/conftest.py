"""Test setup: eight simulated CPU devices, so sharded code paths run here.

XLA's CPU backend runs without LLVM's optimisations: compiling, not running,
is most of a test's time (timings are benchmarks, never tests). Compiled
programs go to one persistent cache for the whole test run, shared with the
runs the tests start as subprocesses: many tests compile the same small
model's step, and XLA compiles it once.

The default run (``-m 'not slow'``) stays under five minutes on two cores:
besides the tests marked ``slow`` where they are written, the ones listed in
`_SLOW` (measured over 2-3 s there, most of it compiling) run only with ``-m slow``.
"""

import os
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="wtfree-tests-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

_SLOW = frozenset({
    "tests/test_sweep.py::test_a_resumed_sweep_equals_the_uninterrupted_one",
    "tests/test_sweep.py::test_a_diverging_cell_is_marked_and_the_others_finish_as_alone",
    "tests/test_replicas.py::test_each_replica_is_the_single_seed_run_of_its_seed[wm]",
    "tests/test_data_tfds.py::test_the_loop_trains_seeds_on_a_host_fed_set",
    "tests/test_mirror.py::test_fixed_point_has_w_scale_whatever_the_decay[0.5-relu]",
    "tests/test_mirror.py::test_fixed_point_has_w_scale_whatever_the_decay[0.5-linear]",
    "tests/test_dispatch.py::test_a_conv_models_run_is_the_same_stepped_one_by_one_or_in_a_loop",
    "tests/test_transformers.py::test_vit_under_bp_has_the_outputs_and_gradients_of_flax_layers",
    "tests/test_alignment_losses.py::test_one_step_moves_b_by_its_loss_gradient[sa-conv]",
    "tests/test_benchmarks.py::test_loop_speed_quick_run_reports_both_rates_and_their_ratio",
    "tests/test_benchmarks.py::test_seeds_speed_quick_run_times_one_and_many_seeds",
    "tests/test_configs.py::test_config_takes_one_step[mnist1d_mlp]",
    "tests/test_configs.py::test_config_takes_one_step[resnet20_brsf]",
    "tests/test_convert.py::test_bp_keeps_flax_dtypes[Conv-param_dtype]",
    "tests/test_convert.py::test_bp_keeps_flax_dtypes[DenseGeneral-both]",
    "tests/test_convert.py::test_bp_mlp_has_flax_params_outputs_and_gradients",
    "tests/test_convert.py::test_conv_and_dense_general_follow_bp_and_fa[Conv0]",
    "tests/test_convert.py::test_conv_and_dense_general_follow_bp_and_fa[DenseGeneral4]",
    "tests/test_convert.py::test_conv_and_dense_general_follow_bp_and_fa[DenseGeneral5]",
    "tests/test_convert.py::test_weight_mirror_brings_a_dense_general_feedback_to_w",
    "tests/test_data.py::test_grain_workers_give_the_same_batches",
    "tests/test_dfa.py::test_a_conv_layer_input_receives_b_e_in_its_own_shape",
    "tests/test_dfa.py::test_conv_nets_with_batch_norm_and_batch_manhattan_learn_under_dfa[lenet]",
    "tests/test_dfa.py::test_delta_angles_start_near_90_and_every_layer_reports_a_weight_ratio",
    "tests/test_dfa.py::test_hidden_gradients_are_the_broadcast_error_times_the_derivative",
    "tests/test_experiments.py::test_lillicrap_depth_deeper_student_wins_under_fa",
    "tests/test_feedback.py::test_conv_gradients_match_closed_form[bp-s1-SAME-g1]",
    "tests/test_feedback.py::test_generic_form_serves_an_einsum",
    "tests/test_feedback.py::test_sharded_batch_gives_the_same_gradients[bp]",
    "tests/test_learning.py::test_converted_flax_model_aligns_under_adam_in_a_users_loop[kp-400]",
    "tests/test_learning.py::test_kp_reports_its_shrink_factor_beside_the_angles",
    "tests/test_learning.py::test_shallow_leaves_hidden_kernels_bit_identical",
    "tests/test_metrics.py::test_delta_angles_bp_zero_and_fa_large_below_the_output",
    "tests/test_mirror.py::test_conv_3x3x64x64_through_relu_mirrors_at_w_scale[gaussian]",
    "tests/test_mirror.py::test_conv_3x3x64x64_through_relu_mirrors_at_w_scale[uniform]",
    "tests/test_mirror.py::test_dense_512x256_mirrors_below_five_degrees_at_w_scale",
    "tests/test_mirror.py::test_fixed_point_has_w_scale_whatever_the_decay[0.02-linear]",
    "tests/test_mirror_resnet.py::test_one_pass_changes_only_feedback",
    "tests/test_models.py::test_error_reaches_every_kernel[resnet_tiny_bottleneck]",
    "tests/test_models.py::test_every_rule_builds[resnet_tiny-sc]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[fa-lenet_cifar]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[fa-lenet_mnist1d]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[fa-lenet_mnist]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[fa-resnet_tiny]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[kp-resnet_tiny]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[kp-lenet_cifar]",
    "tests/test_experiments.py::test_lillicrap_linear_fa_learns_like_bp_and_aligns",
    "tests/test_transformers.py::test_causal_lm_outputs_do_not_see_later_tokens",
    "tests/test_models.py::test_fa_keeps_feedback_for_every_kernel_but_a_bp_last_layer[resnet_tiny_bottleneck]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[fa-resnet_tiny_bottleneck]",
    "tests/test_models.py::test_mirror_pass_moves_every_b_and_leaves_batch_stats_alone[lenet_cifar-False]",
    "tests/test_models.py::test_mirror_pass_moves_every_b_and_leaves_batch_stats_alone[mlp_bn-False]",
    "tests/test_models.py::test_mirror_pass_moves_every_b_and_leaves_batch_stats_alone[resnet_tiny_bottleneck-False]",
    "tests/test_nn.py::test_bp_equals_jax_grad_of_plain_flax[CNN-shape1]",
    "tests/test_nn.py::test_kp_follows_the_equations_with_an_explicit_b",
    "tests/test_node_perturbation.py::test_node_perturbation_estimates_the_gradient_on_average",
    "tests/test_notebook.py::test_quickstart_runs_top_to_bottom[notebooks]",
    "tests/test_reliability.py::test_bad_config_exits_2_with_a_message_and_no_traceback[overrides2-imagenet3000]",
    "tests/test_train.py::test_one_device_and_eight_give_the_same_parameters[bp]",
    "tests/test_train.py::test_one_device_and_eight_give_the_same_parameters[dfa]",
    "tests/test_train.py::test_one_device_and_eight_give_the_same_parameters[fa]",
    "tests/test_train.py::test_one_device_and_eight_give_the_same_parameters[kp]",
    "tests/test_models.py::test_mirror_pass_moves_every_b_and_leaves_batch_stats_alone[resnet_tiny_bottleneck-True]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[fa-resnet_tiny_relu_bn]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[kp-resnet_tiny_bottleneck]",
    "tests/test_convert.py::test_fa_trains_a_flax_transformer_block",
    "tests/test_learning.py::test_converted_flax_model_aligns_under_adam_in_a_users_loop[wm-300]",
    "tests/test_train.py::test_one_device_and_eight_give_the_same_parameters[wm]",
    "tests/test_optim.py::test_order_is_decay_then_sign_then_momentum_then_lr",
    "tests/test_feedback.py::test_sharded_batch_gives_the_same_gradients[fa]",
    "tests/test_alignment_losses.py::test_one_step_moves_b_by_its_loss_gradient[aa-conv]",
    "tests/test_models.py::test_logits_have_shape_batch_by_classes[kp-lenet_mnist]",
    "tests/test_models.py::test_mirror_pass_moves_every_b_and_leaves_batch_stats_alone[lenet_cifar-True]",
    "tests/test_feedback.py::test_conv_gradients_match_closed_form[bp-s2-VALID-g1]",
    "tests/test_reliability.py::test_bad_config_exits_2_with_a_message_and_no_traceback[overrides0-rule 'fx' is not one of bp, fa]",
    "tests/test_reliability.py::test_bad_config_exits_2_with_a_message_and_no_traceback[overrides1-model 'vgg' is not one of]",
    "tests/test_reliability.py::test_bad_config_exits_2_with_a_message_and_no_traceback[overrides3-does not divide]",
    "tests/test_reliability.py::test_bad_config_exits_2_with_a_message_and_no_traceback[overrides4-contradicts]",
    "tests/test_reliability.py::test_bad_config_exits_2_with_a_message_and_no_traceback[overrides5-apply only to rules that mirror B]",
    "tests/test_reliability.py::test_bad_config_exits_2_with_a_message_and_no_traceback[overrides7-decay belong to kp, wm]",
    "tests/test_train.py::test_resumed_run_equals_uninterrupted[wm]",
    "tests/test_multiprocess.py::test_both_processes_joined_one_job",
    "tests/test_multiprocess.py::test_both_processes_end_with_the_same_state",
    "tests/test_multiprocess.py::test_only_process_0_writes_metrics",
    "tests/test_multiprocess.py::test_two_processes_equal_one",
    "tests/test_multiprocess.py::test_shared_checkpoint_is_whole",
    "tests/test_metrics.py::test_weight_angles_name_every_layer",
    "tests/test_notebook.py::test_quickstart_runs_top_to_bottom[.]",
})


@pytest.hookimpl(tryfirst=True)  # Before `-m` selects by marker.
def pytest_collection_modifyitems(items):
  for item in items:
    if item.nodeid in _SLOW:
      item.add_marker(pytest.mark.slow)
