process.stdout.write('before require\n');
const tf = require('@tensorflow/tfjs-node');
process.stdout.write('after require\n');
tf.tidy(() => tf.conv2d(tf.ones([1,8,8,3]), tf.ones([3,3,3,4]), 1, 'same').sum().dataSync());
process.stdout.write('after op\n');
