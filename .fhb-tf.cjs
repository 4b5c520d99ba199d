process.env.TF_CPP_MIN_LOG_LEVEL = process.argv[2];
const tf = require('@tensorflow/tfjs-node');
const b = tf.backend();
console.log('version', b.binding.TF_Version);
tf.tidy(() => tf.conv2d(tf.ones([1,8,8,3]), tf.ones([3,3,3,4]), 1, 'same').sum().dataSync());
console.log('done');
